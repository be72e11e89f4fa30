"""Keep the deployment files honest without a Docker engine: what they copy exists, what
they install is the serving stack, what they run starts the app."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from .test_e2e_browser import free_port

REPO = Path(__file__).resolve().parents[1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_copies_what_exists_and_runs_as_non_root():
    instructions = dockerfile_instructions()
    kinds = [kind for kind, _ in instructions]
    base = [argument for kind, argument in instructions if kind == "ARG" and argument.startswith("BASE=")]
    assert kinds[:2] == ["ARG", "FROM"] and instructions[1][1] == "${BASE}" and "slim" in base[0]  # official by default
    for kind, argument in instructions:
        if kind == "COPY":
            *sources, _target = argument.split()
            for source in sources:
                assert glob.glob(str(REPO / source)), f"COPY source {source} does not exist"
    users = [argument for kind, argument in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")  # installs as root, runs as app
    healthcheck = dict(instructions)["HEALTHCHECK"]
    assert "image_tag_suggestion.healthcheck" in healthcheck  # the app's or the API's health, on $PORT
    entrypoint = json.loads(dict(instructions)["ENTRYPOINT"])  # exec form: a JSON array
    command = json.loads(dict(instructions)["CMD"])
    assert entrypoint + command == ["image-tags", "app"]
    install = [a for k, a in instructions if k == "RUN" and "pip install" in a]
    assert install == ["pip install -r requirements.txt '.[api]'"]  # the serving stack and the API


def test_requirements_are_the_serving_stack_only():
    lines = [l.split("#")[0].strip() for l in (REPO / "requirements.txt").read_text().splitlines()]
    names = {l.split("==")[0].lower() for l in lines if l}
    assert "ai-edge-litert" in names and "streamlit" in names and "." in names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "torch"}


def test_heroku_files_agree_on_python():
    runtime = (REPO / "runtime.txt").read_text().strip()
    version = (REPO / ".python-version").read_text().strip()
    assert runtime.startswith(f"python-{version}.")
    assert f"python:{version}-slim" in (REPO / "Dockerfile").read_text()
    assert (REPO / "Procfile").read_text().startswith("web: sh setup.sh && streamlit run image_tag_suggestion/main.py")


def test_setup_sh_writes_a_safe_streamlit_config(tmp_path):
    subprocess.run(["sh", str(REPO / "setup.sh")], env={**os.environ, "HOME": str(tmp_path), "PORT": "43210"}, check=True)
    config = tomllib.loads((tmp_path / ".streamlit" / "config.toml").read_text())
    assert config["server"]["headless"] is True and config["server"]["port"] == 43210
    assert config["server"].get("enableCORS", True) and config["server"].get("enableXsrfProtection", True)
    assert not (tmp_path / ".streamlit" / "credentials.toml").exists()
    # A public visitor: no developer toolbar (Deploy, clear cache), no tracebacks with server paths.
    assert config["client"] == {"toolbarMode": "viewer", "showErrorDetails": "none"}


@pytest.mark.slow
def test_entrypoint_command_starts_the_app_on_port():
    """`image-tags app` with $PORT, as the container and a dyno start it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "image_tag_suggestion.cli", "app"], cwd="/",
                              env={**os.environ, "PORT": str(port)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        assert "<title>Streamlit</title>" in page or "streamlit" in page.lower()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5).status == 200
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.slow
def test_pip_step_installs_the_serving_stack_in_a_fresh_venv(tmp_path):
    """What the Dockerfile's RUN does, in a fresh venv: the app's imports work, no TensorFlow."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=REPO, check=True, timeout=900)
    probe = ("import importlib.util, image_tag_suggestion as m, streamlit, altair;"
             "from image_tag_suggestion import ImagePredictor, LabelPredictor;"
             "ImagePredictor.init_from_config_path(); LabelPredictor.init_from_config_path();"
             "print(importlib.util.find_spec('tensorflow') is None, m.__file__)")
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True" and str(venv) in out[1]
    assert (venv / "bin" / "image-tags").exists()
