"""Model bundles: a folder with ``config.yaml``, an encoder and a label table.

Everything that serves tags loads bundles and never cares how they were made.
``config.yaml`` lists every file with its sha256 and size, so a bundle can be checked
on load and downloaded safely.

Three doors, one for each kind of location, all behind :func:`load_bundle`:
- :func:`open_bundle` opens a bundle folder (or its ``config.yaml``) on disk;
- :func:`download_bundle` fetches the bundle whose ``config.yaml`` is at an http(s)
  URL into a cache: plain file names only, each file's size capped by the size the
  config declares and the whole by :data:`MAX_DOWNLOAD_BYTES`, every sha256 checked,
  every file written whole or not at all; no other scheme (``file:``...) is followed;
- a *pointer* config (``bundle: default_model`` or ``bundle: https://.../config.yaml``,
  as the package's own ``config.yaml`` is) is followed at most :data:`MAX_POINTER_DEPTH`
  times, so a loop ends with an error, not a crash.
"""

from __future__ import annotations

import hashlib
import os
import re
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
MAX_POINTER_DEPTH = 3
MAX_CONFIG_BYTES = 1 << 20
#: The most a download may bring in all (``IMAGE_TAGS_MAX_DOWNLOAD``, bytes): a bundle is
#: tens of MB, a hostile server could send without end.
MAX_DOWNLOAD_BYTES = int(os.environ.get("IMAGE_TAGS_MAX_DOWNLOAD", 1 << 30))
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
    """Load a bundle from a folder or ``config.yaml`` on disk (a bundle or a pointer), or
    from the http(s) URL of a ``config.yaml`` (downloaded into ``cache_dir``)."""
    return _load(str(location), cache_dir, verify, depth=0)


def _load(location: str, cache_dir, verify: bool, depth: int) -> Bundle:
    if depth > MAX_POINTER_DEPTH:
        raise BundleError(f"{location}: more than {MAX_POINTER_DEPTH} pointers in a row (a config that points at itself?)")
    if is_url(location):
        return open_bundle(download_bundle(location, cache_dir, depth=depth), verify)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location) or location.startswith("file:"):
        raise BundleError(f"{location}: only http(s) URLs and paths on disk can hold a bundle")
    config_path = _config_path(Path(location).expanduser())
    config = _read_yaml(config_path)
    if _is_pointer(config):
        target = str(config["bundle"])
        if not is_url(target):
            target = str((config_path.parent / target).resolve())
        return _load(target, cache_dir, verify, depth + 1)
    return _validated(config_path.parent, config, verify)


def open_bundle(folder: str | Path, verify: bool = True) -> Bundle:
    """Open the bundle in ``folder`` (or the folder of the ``config.yaml`` given); no pointers."""
    config_path = _config_path(Path(folder).expanduser())
    config = _read_yaml(config_path)
    if _is_pointer(config):
        raise BundleError(f"{config_path}: a pointer to {config['bundle']!r}, not a bundle (use load_bundle)")
    return _validated(config_path.parent, config, verify)


def _config_path(path: Path) -> Path:
    config_path = path / CONFIG_FILE if path.is_dir() else path
    if not config_path.is_file():
        raise BundleError(f"{path}: no such bundle folder or config file")
    return config_path


def _is_pointer(config: dict) -> bool:
    return "bundle" in config and "kind" not in config


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
    """Write ``config.yaml`` for ``folder``, recording the sha256 and size of every listed file."""
    folder = Path(folder)
    config = dict(config)
    config["format_version"] = FORMAT_VERSION
    config["files"] = {name: sha256_of(folder / name) for name in sorted(config.get("files") or {})}
    config["sizes"] = {name: (folder / name).stat().st_size for name in config["files"]}
    path = folder / CONFIG_FILE
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def download_bundle(url: str, cache_dir: str | Path | None = None, timeout: float = 60.0, depth: int = 0) -> Path:
    """Fetch the bundle whose ``config.yaml`` is at the http(s) ``url``; return the local folder.

    Files are fetched next to the config's URL, each capped by the size the config declares
    (``sizes``) and all together by :data:`MAX_DOWNLOAD_BYTES`, checked against their sha256
    and kept in ``cache_dir`` (default ``~/.cache/image_tag_suggestion``); a second call
    reuses files whose hash still matches. A pointer config is followed (see the module).
    """
    if not is_url(url):
        raise BundleError(f"{url}: only http(s) URLs are downloaded")
    if depth > MAX_POINTER_DEPTH:
        raise BundleError(f"{url}: more than {MAX_POINTER_DEPTH} pointers in a row (a config that points at itself?)")
    config_bytes = _fetch(url, timeout, MAX_CONFIG_BYTES)
    try:
        config = yaml.safe_load(config_bytes)
    except yaml.YAMLError as exc:
        raise BundleError(f"{url}: config is not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{url}: config is not a YAML mapping")
    if _is_pointer(config):
        return download_bundle(urllib.parse.urljoin(url, str(config["bundle"])), cache_dir, timeout, depth + 1)
    files, sizes = config.get("files"), config.get("sizes") or {}
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{url}: config.yaml lists no files with sha256")
    for name in files:
        _check_file_name(name, url)
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
        raise BundleError(f"{url}: config.yaml's sizes must map file names to byte counts")
    if sum(sizes.get(name, 0) for name in files) > MAX_DOWNLOAD_BYTES:
        raise BundleError(f"{url}: the bundle declares more than {MAX_DOWNLOAD_BYTES} bytes; refusing it "
                          "(IMAGE_TAGS_MAX_DOWNLOAD raises the limit)")
    folder = Path(cache_dir or default_cache_dir()) / hashlib.sha256(config_bytes).hexdigest()[:24]  # see cached_bundles
    folder.mkdir(parents=True, exist_ok=True)
    budget = MAX_DOWNLOAD_BYTES
    for name, digest in files.items():
        target = folder / name
        if target.is_file() and sha256_of(target) == digest:
            continue
        budget -= download_verified(_child_url(url, name), target, str(digest), timeout, min(budget, sizes.get(name, budget)))
    _atomic_write(folder / CONFIG_FILE, config_bytes)
    return folder


def cached_bundles(cache_dir: str | Path | None = None) -> list[tuple[Path, int]]:
    """The downloaded bundles in the cache, with their sizes in bytes (other folders are not ours)."""
    folder = Path(cache_dir or default_cache_dir())
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        # Downloads are named by their config's hash; the original app's imported model by its release.
        if entry.is_dir() and re.fullmatch(r"[0-9a-f]{24}|seed-v[0-9.]+", entry.name) and (entry / CONFIG_FILE).is_file():
            found.append((entry, sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())))
    return found


def clear_cache(cache_dir: str | Path | None = None) -> tuple[int, int]:
    """Delete the downloaded bundles; returns (bundles, bytes) removed."""
    bundles = cached_bundles(cache_dir)
    for entry, _ in bundles:
        shutil.rmtree(entry)
    return len(bundles), sum(size for _, size in bundles)


def _child_url(url: str, name: str) -> str:
    child = urllib.parse.urljoin(url, name)
    if not is_url(child) or urllib.parse.urlsplit(child).netloc != urllib.parse.urlsplit(url).netloc:
        raise BundleError(f"{url}: file {name!r} would be fetched from elsewhere ({child})")
    return child


def download_verified(url: str, target: Path, digest: str, timeout: float, limit: int) -> int:
    """Stream ``url`` into ``target`` (whole or not at all); returns the bytes written."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        hasher, size = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out, _open_url(url, timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                size += len(chunk)
                if size > limit:
                    raise BundleError(f"{url}: larger than the {limit} bytes allowed (config.yaml's size or the "
                                      "download limit); refusing it")
                hasher.update(chunk)
                out.write(chunk)
        if hasher.hexdigest() != digest:
            raise BundleError(f"{url}: sha256 {hasher.hexdigest()} does not match {digest} from config.yaml; refusing it")
        os.replace(temporary, target)
        return size
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _fetch(url: str, timeout: float, limit: int) -> bytes:
    with _open_url(url, timeout) as response:
        data = response.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{url}: larger than {limit} bytes; not a config.yaml")
    return data


def _open_url(url: str, timeout: float):
    if not is_url(url):
        raise BundleError(f"{url}: only http(s) URLs are downloaded")
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
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name == CONFIG_FILE:
        raise BundleError(f"{where}: file name {name!r} is not a plain file name inside the bundle "
                          "(letters, digits, '.', '_' and '-', not starting with '.')")


def is_url(location: str) -> bool:
    """An http(s) URL: the only kind of address a bundle is downloaded from."""
    return urllib.parse.urlsplit(location).scheme in ("http", "https") and "://" in location
