"""The original app's published model for users who are online: ``--model seed``.

The original app (FastImageClassification, release v0.1) published its model as two files.
On first use they are downloaded from that release (or from ``IMAGE_TAGS_SEED_URL``, an
operator's mirror), refused unless their sha256 is the published one, imported into a
normal bundle once (``conversion/seed_import.py``, which needs TensorFlow) and kept in the
cache. Where nothing can be downloaded, the error says how to import the files by hand.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .bundle import CONFIG_FILE, DEFAULT_CONFIG, BundleError, default_cache_dir
from .files import OutputFolderError

SEED_RELEASE = "https://github.com/CVxTz/FastImageClassification/releases/download/v0.1/"
H5_FILE, LABELS_FILE = "image_representation.h5", "labels.json"
SEED_FILES = {  # the published sha256 of each file
    H5_FILE: "c1fbeb320d7b81c118e7f76ad19eb11355521798c3cd3269a64aae36f8dd236e",
    LABELS_FILE: "9616ab9287d0f1e9883c8036512ba858ab56c9765ef72dfdbac057737737f683",
}
MAX_FILE_BYTES = 512 << 20
#: Each file must arrive within this many seconds (a stalled or trickling server is cut off).
FILE_DEADLINE = 900.0
#: Where GitHub's release downloads redirect to (over https): the files' hashes are fixed, so
#: the release server may hand them over from its file host; no other host is followed.
SEED_RELEASE_HOSTS = ("objects.githubusercontent.com", "release-assets.githubusercontent.com")
SEED_FOLDER = "seed-v0.1"


def resolve_model(location: str | Path | None, report: Callable[[str], None] | None = None) -> str | Path:
    """A model named on the command line or in the app -> a location ``load_bundle`` opens:
    ``default`` (or nothing) is the built-in model, ``seed`` the original app's (imported on
    first use; ``report`` hears what is being done meanwhile); anything else is returned as it is."""
    if location is None or str(location) == "default":
        return DEFAULT_CONFIG
    if str(location) == "seed":
        return seed_bundle(report=report)
    return location


def seed_folder(cache_dir: str | Path | None = None) -> Path:
    """Where the imported seed bundle lives (``image-tags import-seed`` writes here by default)."""
    return Path(cache_dir or default_cache_dir()) / SEED_FOLDER


def seed_bundle(cache_dir: str | Path | None = None, base_url: str | None = None, files: dict[str, str] = SEED_FILES,
                timeout: float = 60.0, report: Callable[[str], None] | None = None,
                deadline: float = FILE_DEADLINE) -> Path:
    """The imported seed bundle's folder: imported already, or downloaded, checked and imported now.

    Downloads go through ``download.download_verified``: sha256 checked, size capped, each file
    within ``deadline`` seconds, redirects only as ``download.redirect_refusal`` allows."""
    from .download import DownloadError, download_verified

    folder = seed_folder(cache_dir)
    if (folder / CONFIG_FILE).is_file():
        return folder
    base_url = base_url or os.environ.get("IMAGE_TAGS_SEED_URL") or SEED_RELEASE
    allow_hosts = SEED_RELEASE_HOSTS if base_url == SEED_RELEASE else ()  # a mirror keeps to its own host
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".seed-") as downloads:
        paths = {}
        for name, digest in files.items():
            paths[name] = Path(downloads) / name
            try:
                download_verified(base_url.rstrip("/") + "/" + name, paths[name], digest, timeout, MAX_FILE_BYTES,
                                  deadline=deadline, allow_hosts=allow_hosts)
            except DownloadError as exc:
                raise BundleError(f"the original app's model is not imported and could not be fetched ({exc}); "
                                  f"download {H5_FILE} and {LABELS_FILE} from {SEED_RELEASE} and run: image-tags "
                                  f"import-seed --h5 {H5_FILE} --labels {LABELS_FILE}") from None
        if report:
            report(f"the original app's model is downloaded and checked; importing it into {folder} (once)")
        return import_files(paths[H5_FILE], paths[LABELS_FILE], folder)


def import_files(h5_path: str | Path, labels_path: str | Path, out: str | Path, force: bool = False) -> Path:
    """Import the two files into a bundle at ``out`` (needs TensorFlow and h5py); ``force``: see
    ``files.py`` (a folder holding other files is written into, never emptied)."""
    try:
        from .conversion.seed_import import SeedImportError, import_seed
    except ImportError as exc:
        raise BundleError(f"importing the original app's model needs TensorFlow and h5py ({exc}): "
                          "pip install 'image-tag-suggestion[build]'") from None
    try:
        return import_seed(h5_path, labels_path, out, force)
    except OutputFolderError as exc:
        raise BundleError(str(exc)) from None
    except SeedImportError as exc:
        raise BundleError(f"cannot import the original app's model: {exc}") from None
