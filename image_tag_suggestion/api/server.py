"""Start the server: check the keys against the address, load the models, run uvicorn.

Without any key (API keys or AWS pairs) anyone who reaches the port may call it, so it
then binds to 127.0.0.1 only, says so, and refuses any other address.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Callable

import uvicorn  # here, not in run(): a missing api extra shows when the CLI imports this module

from .app import create_app
from .service import Settings

DEFAULT_PORT = 8080
#: Open connections uvicorn keeps at most (each costs a few kB); past it uvicorn itself answers 503.
MAX_CONNECTIONS = 512


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def choose_host(settings: Settings, host: str | None, say: Callable[[str], None]) -> str | None:
    """The address to bind, or None (refused) when it would open the server to others without keys."""
    if settings.credentials.configured:
        return host or "0.0.0.0"
    if host is not None and not is_loopback(host):
        say(f"refusing to listen on {host} without keys: give --api-keys, --aws-credentials, "
            "IMAGE_TAGS_API_KEYS or IMAGE_TAGS_AWS_CREDENTIALS, or listen on 127.0.0.1")
        return None
    say("no API keys or AWS credentials configured: anyone on this machine may call the server, so it listens "
        "on 127.0.0.1 only")
    return host or "127.0.0.1"


def run(settings: Settings, host: str | None, port: int | None, say: Callable[[str], None], engine: str = "local",
        replicas: int = 1) -> int:
    host = choose_host(settings, host, say)
    if host is None:
        return 2
    port = port or int(os.environ.get("PORT") or DEFAULT_PORT)
    if engine == "ray":
        from .ray_serve import run_on_ray

        return run_on_ray(settings, host, port, replicas, say)
    app = create_app(settings)
    say(f"serving {', '.join(m.name for m in app.state.service.models)} on http://{host}:{port} (pool "
        f"{settings.pool}, queue {settings.queue_size}; docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="off", timeout_keep_alive=5,
                limit_concurrency=MAX_CONNECTIONS, server_header=False)
    return 0
