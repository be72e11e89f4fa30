"""Writing to a user's disk without ever losing what was there.

One way to write a file (:func:`atomic_write`, :func:`atomic_output`): a temporary file
with a unique name in the same folder, written, flushed and fsynced, then renamed over
the target, then the folder fsynced. A reader (or a crash at any moment) sees the old
file or the new one, never half of one. A symlink is followed: its target is replaced
and the link stays a link. An existing file keeps its mode; a new one gets the usual
mode (0666 less the umask).

One way to write a bundle folder (:func:`check_output_folder`, :func:`install_folder`):
the folder is built in a staging folder beside the target, then moved in. A target
that holds anything but a bundle this program wrote is never emptied: the command
stops and says what is there, and ``force`` only lets the new bundle's files be
written in beside the other files, removing nothing but the old bundle's own files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

import yaml

#: The file that makes a folder a bundle: it lists the bundle's files.
CONFIG_FILE = "config.yaml"


class OutputFolderError(ValueError):
    """The output folder holds something that is not a bundle this program wrote."""


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through: it replaces ``path`` only when the block ends
    without an error (see the module). ``mode`` overrides the kept or default mode."""
    target = Path(os.path.realpath(path))  # a symlink's target is replaced, the link kept
    if mode is None:
        mode = target.stat().st_mode & 0o7777 if target.exists() else _default_mode()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
        fsync_folder(target.parent)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` whole or not at all (see the module); returns ``path``."""
    with atomic_output(path, mode) as out:
        out.write(data)
    return Path(path)


def bundle_files(folder: str | os.PathLike) -> list[str] | None:
    """The names a bundle this program wrote in ``folder`` consists of (its config first), or
    None when ``folder`` holds no such bundle."""
    config_path = Path(folder) / CONFIG_FILE
    if not config_path.is_file() or config_path.is_symlink():
        return None
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    # What write_config writes: a format version, and the files with their hashes and sizes.
    if not isinstance(config, dict) or "format_version" not in config:
        return None
    files, sizes = config.get("files"), config.get("sizes")
    if not isinstance(files, dict) or not isinstance(sizes, dict):
        return None
    outputs = config.get("outputs") or []  # what the command wrote beside the bundle (metrics, plots)
    if not isinstance(outputs, list):
        return None
    names = [CONFIG_FILE, *outputs, *files]
    if not all(isinstance(n, str) and n and os.sep not in n and n not in (".", "..") for n in names):
        return None
    return names


def check_output_folder(out: str | os.PathLike, force: bool = False) -> None:
    """Refuse early (before any long work) an ``out`` that a bundle may not be written to: one
    holding files that are not those of a bundle this program wrote, unless ``force``."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputFolderError(f"{out}: exists and is not a folder; choose a new or empty folder")
    if not out.exists() or force:
        return
    present = sorted(entry.name for entry in out.iterdir())
    if not present:
        return
    ours = bundle_files(out)
    others = [name for name in present if ours is None or name not in ours]
    if others:
        listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise OutputFolderError(
            f"{out}: holds files that are not a bundle image-tags wrote ({listed}); nothing was changed. "
            "Choose a new or empty folder, or give --force to write the bundle's files in beside them "
            "(nothing but an old bundle's own files is ever removed)")


def install_folder(staging: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> Path:
    """Move the finished bundle in ``staging`` to ``out``. What was in ``out`` before is removed
    only where it is the old bundle's own files; everything else stays (see the module)."""
    staging, out = Path(staging), Path(out)
    check_output_folder(out, force)
    new_names = sorted(entry.name for entry in staging.iterdir())
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
        out.chmod(0o755)  # a staging folder is private (0700); a bundle is read by whoever serves it
        fsync_folder(out.parent)
        return out
    old_names = bundle_files(out) or []
    present = {entry.name for entry in out.iterdir()}
    clashes = [name for name in new_names if name in present and name not in old_names]
    if clashes:
        raise OutputFolderError(f"{out}: already holds {', '.join(clashes)}, which are not an old bundle's files; "
                                "nothing was changed. Choose a new or empty folder")
    for name in old_names:  # only the old bundle's own files (its config last, so it stays a bundle until then)
        if name != CONFIG_FILE and name not in new_names:
            _remove(out / name)
    for name in new_names:
        if name == CONFIG_FILE:
            continue
        _remove(out / name)
        os.replace(staging / name, out / name)
    os.replace(staging / CONFIG_FILE, out / CONFIG_FILE)
    fsync_folder(out)
    return out


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def staging_folder(out: str | os.PathLike, prefix: str = ".staging-") -> tempfile.TemporaryDirectory:
    """A temporary folder beside ``out`` (same file system, so moving it in is a rename)."""
    parent = Path(out).parent
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=parent, prefix=prefix)

