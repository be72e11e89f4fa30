"""Scale-out on Ray Serve: ``image-tags serve --engine ray --replicas N``.

The same app (``create_app``) runs in each of N replicas, each with its own models and
pool; Ray Serve's proxy listens on the given address and spreads requests over them. A
replica takes at most ``pool + queue`` requests at once (Serve's ``max_ongoing_requests``),
and Serve's own queue in front of them is bounded too (its overflow is answered 503).
Without ``RAY_ADDRESS`` a local Ray starts on 127.0.0.1; with it, the replicas go to that
cluster (every node then needs the bundles at the same paths, as for ``index --engine ray``).

The plain server keeps no state between requests either, so the other way to scale out
is N plain containers behind any load balancer.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable

from .service import Settings

#: Requests Serve's proxy may hold for each replica beyond those the replica has taken.
QUEUED_PER_REPLICA = 8


def deployment(settings: Settings, replicas: int, loopback_only: bool = False):
    """The Serve application: N replicas, each building the ASGI app at start (models loaded once there)."""
    from ray import serve

    @serve.deployment(name="image-tags", num_replicas=replicas, ray_actor_options={"num_cpus": settings.pool},
                      max_ongoing_requests=settings.pool + settings.queue_size,
                      max_queued_requests=QUEUED_PER_REPLICA * replicas)
    @serve.ingress()
    class ImageTags:
        def __init__(self, settings: Settings, loopback_only: bool):
            self.settings = settings
            if loopback_only:
                _keep_replica_on_loopback()

        def __serve_build_asgi_app__(self):
            from .app import create_app

            return create_app(self.settings)

    return ImageTags.bind(settings, loopback_only)


def _keep_replica_on_loopback() -> None:
    """Ray Serve (2.60) starts each replica's internal gRPC server on every interface ("[::]:0",
    fixed in its replica code) whatever the node's address; on a local Ray, where the node is
    127.0.0.1, bind it there instead. Runs in the replica, before that server starts; a Ray
    without this hook is left as it is."""
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "loopback", False):
        return

    def on_loopback(server, address: str):
        return original(server, address.replace("[::]", "127.0.0.1", 1))

    on_loopback.loopback = True
    replica.add_port_to_grpc_server = on_loopback


def run_on_ray(settings: Settings, host: str, port: int, replicas: int, say: Callable[[str], None]) -> int:
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ.pop("RAY_ADDRESS", None)  # an empty one would be read by ray.init as a malformed address
        # A local Ray on loopback only (Ray's single-machine mode; read when ray is imported, and
        # inherited by the processes it starts): nothing of it is reachable from other machines.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray import serve

    local = {} if address else {"num_cpus": max(os.cpu_count() or 1, replicas * settings.pool)}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, **local)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(deployment(settings, replicas, loopback_only=address is None), name="image-tags", route_prefix="/")
        say(f"serving on http://{host}:{port} through Ray Serve, {replicas} replicas (pool {settings.pool} and "
            f"queue {settings.queue_size} each)")
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
