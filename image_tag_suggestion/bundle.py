"""Model bundles: a folder with ``config.yaml``, an encoder and a label table.

Everything that serves tags loads bundles and never cares how they were made.
``config.yaml`` lists every file with its sha256, so a bundle can be checked on
load and downloaded safely: :func:`download_bundle` fetches the files a remote
config lists into a cache and refuses any whose hash differs.

A config may also be a *pointer* (``bundle: default_model`` or
``bundle: https://.../config.yaml``), as the package's own ``config.yaml`` is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from .labels import LabelTable
from .preprocessing import Preprocessing
from .scoring import ScoringRule

CONFIG_FILE = "config.yaml"
FORMAT_VERSION = 1
KINDS = ("classifier", "embedding")
PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = PACKAGE_DIR / CONFIG_FILE


class BundleError(ValueError):
    """A bundle or config is missing, malformed or corrupted; the message says which part."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("IMAGE_TAGS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "image_tag_suggestion"
    )
    return Path(base)


@dataclass
class Bundle:
    """A loaded, validated bundle: paths and settings; the heavy parts load on demand."""

    folder: Path
    config: dict
    preprocessing: Preprocessing
    scoring: ScoringRule

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.folder.name))

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def embedding_dim(self) -> int:
        return int(self.config["encoder"]["embedding_dim"])

    @property
    def encoder_path(self) -> Path:
        return self.folder / self.config["encoder"]["tflite"]

    @property
    def keras_path(self) -> Path | None:
        name = self.config["encoder"].get("keras")
        return self.folder / name if name else None

    @property
    def face_detector_path(self) -> Path | None:
        """The face detector's ``.tflite`` (``faces.detector`` in config.yaml), if the bundle has one."""
        name = (self.config.get("faces") or {}).get("detector")
        return self.folder / name if name else None

    @property
    def ranking_order(self) -> str:
        return str(self.config.get("ranking", {}).get("order", "specific"))

    @property
    def min_score(self) -> float:
        """The "likely" cut-off: tags scoring below it are not shown by default (0: show all)."""
        return float(self.config.get("ranking", {}).get("min_score", 0.0))

    def load_labels(self) -> LabelTable:
        try:
            table = LabelTable.load(self.folder)
        except ValueError as exc:
            raise BundleError(f"bundle {self.folder}: {exc}") from None
        if table.dim != self.embedding_dim:
            raise BundleError(
                f"bundle {self.folder}: label embeddings have {table.dim} dimensions, "
                f"config.yaml says the encoder gives {self.embedding_dim}"
            )
        if bool(table.people) != bool(self.face_detector_path):
            raise BundleError(f"bundle {self.folder}: people tags need a face detector (faces.detector) and "
                              "a face detector needs people tags")
        return table

    def load_face_detector(self, num_threads: int | None = None):
        """The bundle's face detector, or None when it has none."""
        if self.face_detector_path is None:
            return None
        from .faces import FaceDetector

        try:
            return FaceDetector(self.face_detector_path, num_threads=num_threads)
        except ValueError as exc:
            raise BundleError(f"bundle {self.folder}: {exc}") from None

    def load_encoder(self, num_threads: int | None = None):
        from .encoder import TfliteEncoder

        try:
            encoder = TfliteEncoder(self.encoder_path, num_threads=num_threads)
        except ValueError as exc:
            raise BundleError(f"bundle {self.folder}: {exc}") from None
        if encoder.dim != self.embedding_dim or encoder.input_size != self.preprocessing.input_size:
            raise BundleError(
                f"bundle {self.folder}: the encoder maps {encoder.input_size} px to {encoder.dim} dimensions, "
                f"config.yaml says {self.preprocessing.input_size} px to {self.embedding_dim}"
            )
        return encoder


def load_bundle(location: str | Path = DEFAULT_CONFIG, cache_dir: str | Path | None = None, verify: bool = True) -> Bundle:
    """Load a bundle from a folder, a ``config.yaml`` (bundle or pointer) or an http(s) URL."""
    location = str(location)
    if _is_url(location):
        return load_bundle(download_bundle(location, cache_dir), verify=verify)
    path = Path(location).expanduser()
    config_path = path / CONFIG_FILE if path.is_dir() else path
    if not config_path.is_file():
        raise BundleError(f"{location}: no such bundle folder or config file")
    config = _read_yaml(config_path)
    if "bundle" in config and "kind" not in config:  # a pointer
        target = str(config["bundle"])
        if not _is_url(target):
            target = str((config_path.parent / target).resolve())
        return load_bundle(target, cache_dir=cache_dir, verify=verify)
    return _validated(config_path.parent, config, verify)


def _validated(folder: Path, config: dict, verify: bool) -> Bundle:
    where = f"bundle {folder}"
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {version!r} is not {FORMAT_VERSION}; upgrade image_tag_suggestion or rebuild the bundle")
    if config.get("kind") not in KINDS:
        raise BundleError(f"{where}: kind must be one of {KINDS}, not {config.get('kind')!r}")
    encoder = config.get("encoder")
    if not isinstance(encoder, dict) or "tflite" not in encoder or "embedding_dim" not in encoder:
        raise BundleError(f"{where}: config.yaml needs encoder.tflite and encoder.embedding_dim")
    try:
        preprocessing = Preprocessing.from_config(encoder.get("preprocessing", {}))
        scoring = ScoringRule.from_config(config.get("scoring", {}))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where}: {exc}") from None
    files = config.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{where}: config.yaml needs a files section (name: sha256)")
    for name, digest in files.items():
        _check_file_name(name, where)
        file_path = folder / name
        if not file_path.is_file():
            raise BundleError(f"{where}: missing file {name}")
        if verify and sha256_of(file_path) != digest:
            raise BundleError(f"{where}: {name} does not match its sha256 in config.yaml (corrupted or edited)")
    ranking = config.get("ranking", {})
    if ranking.get("order", "specific") not in ("specific", "score"):
        raise BundleError(f"{where}: ranking.order must be specific or score")
    min_score = ranking.get("min_score", 0.0)
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0.0 <= min_score <= 1.0:
        raise BundleError(f"{where}: ranking.min_score must be a number between 0 and 1")
    return Bundle(folder=folder, config=config, preprocessing=preprocessing, scoring=scoring)


def find_bundles(models_dir: str | Path) -> list[Path]:
    """Bundle folders (with a bundle ``config.yaml``) anywhere under ``models_dir``, sorted."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = []
    for config_path in sorted(models_dir.rglob(CONFIG_FILE)):
        try:
            if "kind" in _read_yaml(config_path):
                found.append(config_path.parent)
        except BundleError:
            continue
    return found


def write_config(folder: str | Path, config: dict) -> Path:
    """Write ``config.yaml`` for ``folder``, recording the sha256 of every listed file."""
    folder = Path(folder)
    config = dict(config)
    config["format_version"] = FORMAT_VERSION
    config["files"] = {name: sha256_of(folder / name) for name in sorted(config.get("files") or {})}
    path = folder / CONFIG_FILE
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def download_bundle(url: str, cache_dir: str | Path | None = None, timeout: float = 60.0) -> Path:
    """Fetch the bundle whose ``config.yaml`` is at ``url``; return the local folder.

    Files are fetched next to the config's URL, checked against their sha256 and
    kept in ``cache_dir`` (default ``~/.cache/image_tag_suggestion``); a second
    call reuses files whose hash still matches. A pointer config is followed.
    """
    config_bytes = _fetch(url, timeout)
    try:
        config = yaml.safe_load(config_bytes)
    except yaml.YAMLError as exc:
        raise BundleError(f"{url}: config is not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{url}: config is not a YAML mapping")
    if "bundle" in config and "kind" not in config:
        return download_bundle(urllib.parse.urljoin(url, str(config["bundle"])), cache_dir, timeout)
    files = config.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{url}: config.yaml lists no files with sha256")
    folder = Path(cache_dir or default_cache_dir()) / hashlib.sha256(config_bytes).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    for name, digest in files.items():
        _check_file_name(name, url)
        target = folder / name
        if target.is_file() and sha256_of(target) == digest:
            continue
        _download_verified(urllib.parse.urljoin(url, name), target, str(digest), timeout)
    (folder / CONFIG_FILE).write_bytes(config_bytes)
    return folder


def _download_verified(url: str, target: Path, digest: str, timeout: float) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        hasher = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, _open_url(url, timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                hasher.update(chunk)
                out.write(chunk)
        if hasher.hexdigest() != digest:
            raise BundleError(f"{url}: sha256 {hasher.hexdigest()} does not match {digest} from config.yaml; refusing it")
        shutil.move(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _fetch(url: str, timeout: float) -> bytes:
    with _open_url(url, timeout) as response:
        return response.read()


def _open_url(url: str, timeout: float):
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except OSError as exc:  # URLError, HTTPError and timeouts are all OSErrors
        raise BundleError(f"{url}: download failed ({exc})") from None


def _read_yaml(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BundleError(f"{path}: cannot read ({exc})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path}: not a YAML mapping")
    return config


def _check_file_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") or name == CONFIG_FILE:
        raise BundleError(f"{where}: file name {name!r} is not a plain file name inside the bundle")


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))
