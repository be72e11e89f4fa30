"""Model bundles: a folder with ``config.yaml``, an encoder and a label table.

Everything that serves tags loads bundles and never cares how they were made.
``config.yaml`` lists every file with its sha256 and size, so a bundle can be checked
on load and downloaded safely.

One rule for the files a bundle is made of: every file the config names (``encoder.tflite``,
``encoder.keras``, ``faces.detector``) and every file the label table reads by its fixed
name (``labels.json``, ``label_embeddings.npy``, ``label_bias.npy``) is a plain name inside
the bundle folder that ``files`` lists with its sha256. Nothing else is ever opened, so an
edited or hostile config cannot make us load a file from elsewhere, or one nobody hashed.
Files are hashed on every load: for the built-in bundle (10 MB) that is about 15 ms of CPU.

Three doors, one for each kind of location, all behind :func:`load_bundle`:
- :func:`open_bundle` opens a bundle folder (or its ``config.yaml``) on disk;
- :func:`download_bundle` fetches the bundle whose ``config.yaml`` is at an http(s)
  URL into a cache: each file's size capped by the size the config declares and the
  whole by :data:`MAX_DOWNLOAD_BYTES`, through ``download.py`` (every sha256 checked, every
  file written whole or not at all, redirects only where ``download.redirect_refusal``
  allows, the whole download bounded in time);
- a *pointer* config (``bundle: default_model`` or ``bundle: https://.../config.yaml``,
  as the package's own ``config.yaml`` is) is followed by :func:`pointer_target`, at
  most :data:`MAX_POINTER_DEPTH` times, so a loop ends with an error, not a crash.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml

from .files import atomic_write
from .labels import EMBEDDINGS_FILE, LABELS_FILE, OPTIONAL_FILES, LabelTable, read_person_row
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
#: Seconds one socket operation may wait (connect, or one read).
DEFAULT_TIMEOUT = 60.0
#: The config keys that name a bundle file: (section, key, required).
NAMED_FILES = (("encoder", "tflite", True), ("encoder", "keras", False), ("faces", "detector", False))
#: The files LabelTable.load reads by fixed name; the bias only when it is there.
LABEL_FILES, OPTIONAL_LABEL_FILES = (LABELS_FILE, EMBEDDINGS_FILE), OPTIONAL_FILES
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
        return self._inside(self.config["encoder"]["tflite"])

    @property
    def keras_path(self) -> Path | None:
        name = self.config["encoder"].get("keras")
        return self._inside(name) if name else None

    @property
    def face_detector_path(self) -> Path | None:
        """The face detector's ``.tflite`` (``faces.detector`` in config.yaml), if the bundle has one."""
        name = (self.config.get("faces") or {}).get("detector")
        return self._inside(name) if name else None

    @property
    def person_gate_threshold(self) -> float | None:
        """``faces.look_when_person_at_least`` in config.yaml: the faces of a photo are looked for
        only when the scene head gives "person" at least this probability (``faces.PersonGate``);
        None (the default): in every photo. Checked when the bundle is loaded."""
        return (self.config.get("faces") or {}).get("look_when_person_at_least")

    @property
    def property_signals(self) -> tuple[str, ...]:
        """The photo properties measured from the pixels (``properties`` in config.yaml, see
        ``properties.py``), in the order the embedding carries them."""
        from .properties import SIGNALS

        named = self.config.get("properties") or []
        if not isinstance(named, list):
            raise BundleError(f"bundle {self.folder}: properties must be a list (of {', '.join(SIGNALS)}), not {named!r}")
        unknown = sorted(set(map(str, named)) - set(SIGNALS))
        if unknown:
            raise BundleError(f"bundle {self.folder}: unknown photo properties {unknown} in config.yaml; "
                              f"known: {', '.join(SIGNALS)}")
        return tuple(s for s in SIGNALS if s in named)

    def _inside(self, name: str) -> Path:
        # Checked on load already; checked again so that a Bundle built by hand cannot point outside.
        _check_file_name(name, f"bundle {self.folder}")
        return self.folder / name

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
        if table.property_signals != self.property_signals:
            raise BundleError(f"bundle {self.folder}: its tags are scored from the photo properties "
                              f"{list(table.property_signals)}, but config.yaml's properties list "
                              f"{list(self.property_signals)}: the two must name the same ones")
        return table

    def load_person_gate(self):
        """When to look for faces (``faces.PersonGate``), or None: in every photo."""
        threshold = self.person_gate_threshold
        if threshold is None or self.face_detector_path is None:
            return None
        from .faces import PersonGate

        try:
            row = read_person_row(self.folder)
        except ValueError as exc:
            raise BundleError(f"bundle {self.folder}: {exc}") from None
        if row is None:
            raise BundleError(f"bundle {self.folder}: faces.look_when_person_at_least needs a scene head that "
                              "scores the \"person\" tag, and its labels have none")
        if row[0].shape != (self.embedding_dim,):
            raise BundleError(f"bundle {self.folder}: the scene head's \"person\" row has {row[0].shape} "
                              f"weights, the encoder gives {self.embedding_dim} values")
        return PersonGate(row[0], row[1], float(threshold))

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
    where, config, config_bytes, deadline = _follow_pointers(str(location), DEFAULT_TIMEOUT)
    if config_bytes is None:  # on disk
        return _validated(Path(where).parent, config, verify)
    folder = _download_files(where, config, config_bytes, cache_dir, DEFAULT_TIMEOUT, deadline)
    return open_bundle(folder, verify)


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


def _follow_pointers(location: str, timeout: float, deadline=None) -> tuple[str, dict, bytes | None, object]:
    """Read the config at ``location`` and follow pointers to a bundle's config (both load_bundle
    and download_bundle come through here, so pointers obey one set of rules: :func:`pointer_target`).
    Returns where the config is (its path, or its URL after redirects), the config, its bytes
    when it was downloaded (None when it is on disk), and the download's ``download.Deadline``
    (``deadline``, or one started at the first URL; None if there was none)."""
    for _ in range(MAX_POINTER_DEPTH + 1):
        if is_url(location):
            from .download import Deadline, DownloadError, fetch

            deadline = deadline or Deadline()
            try:
                config_bytes, location = fetch(location, timeout, deadline, MAX_CONFIG_BYTES)
            except DownloadError as exc:
                raise BundleError(str(exc)) from None
            config = _parse_config(config_bytes, location)
        else:
            if _has_scheme(location):
                raise BundleError(f"{location}: only http(s) URLs and paths on disk can hold a bundle")
            config_path = _config_path(Path(location).expanduser())
            location, config, config_bytes = str(config_path), _read_yaml(config_path), None
        if not _is_pointer(config):
            return location, config, config_bytes, deadline
        location = pointer_target(location, config["bundle"])
    raise BundleError(f"{location}: more than {MAX_POINTER_DEPTH} pointers in a row (a config that points at itself?)")


def pointer_target(source: str, target) -> str:
    """Where the pointer config at ``source`` (a path on disk or a URL) leads with ``bundle: target``.

    - A pointer on disk was put there by the user: it may name a bundle on disk (a path
      relative to the pointer's folder) or an http(s) URL.
    - A downloaded pointer is the server's word, so it gets no more than a redirect would
      (``download.redirect_refusal``): a URL (relative to its own) on the same host, never
      from https down to http, never a path on disk or another scheme.
    """
    if not isinstance(target, str) or not target.strip():
        raise BundleError(f"{source}: bundle: must name a bundle folder or the URL of a config.yaml")
    if is_url(source):
        from .download import redirect_refusal

        resolved = urllib.parse.urljoin(source, target)
        refusal = redirect_refusal(source, resolved)
        if refusal:
            raise BundleError(f"{source}: refusing to follow the pointer to {resolved}: {refusal}")
        return resolved
    if is_url(target):
        return target
    if _has_scheme(target):
        raise BundleError(f"{source}: {target}: only http(s) URLs and paths on disk can hold a bundle")
    return str((Path(source).parent / Path(target).expanduser()).resolve())


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
    files = _listed_files(config, where)
    _check_named_files(config, where, folder)
    for name, digest in files.items():
        file_path = folder / name
        if not file_path.is_file():
            raise BundleError(f"{where}: missing file {name}")
        if verify and sha256_of(file_path) != digest:
            raise BundleError(f"{where}: {name} does not match its sha256 in config.yaml (corrupted or edited)")
    _check_faces(config.get("faces"), where)
    ranking = config.get("ranking", {})
    if ranking.get("order", "specific") not in ("specific", "score"):
        raise BundleError(f"{where}: ranking.order must be specific or score")
    min_score = ranking.get("min_score", 0.0)
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0.0 <= min_score <= 1.0:
        raise BundleError(f"{where}: ranking.min_score must be a number between 0 and 1")
    return Bundle(folder=folder, config=config, preprocessing=preprocessing, scoring=scoring)


def _check_faces(faces, where: str) -> None:
    """The ``faces`` section: a detector, and perhaps when to run it (a probability strictly
    between 0 and 1; leave the key out to look in every photo)."""
    if faces is None:
        return
    if not isinstance(faces, dict) or not faces.get("detector"):
        raise BundleError(f"{where}: faces needs a detector (faces.detector: a .tflite file of the bundle)")
    unknown = sorted(set(map(str, faces)) - {"detector", "look_when_person_at_least"})
    if unknown:
        raise BundleError(f"{where}: unknown keys {unknown} under faces (known: detector, look_when_person_at_least)")
    value = faces.get("look_when_person_at_least")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0):
        raise BundleError(f"{where}: faces.look_when_person_at_least must be a probability between 0 and 1 "
                          f"(both excluded), not {value!r}")


def _listed_files(config: dict, where: str) -> dict:
    """The ``files`` section (name: sha256), every name a plain file name."""
    files = config.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{where}: config.yaml needs a files section (name: sha256)")
    for name in files:
        _check_file_name(name, where)
    return files


def _check_named_files(config: dict, where: str, folder: Path | None = None) -> None:
    """Every file the config names, and every label file the label table will read, must be a
    plain name listed in ``files`` (so it is hashed): otherwise a config could load a file from
    outside the bundle, or one nobody checked. ``folder`` (on load) catches a label file that
    lies in the folder without being listed."""
    files = config["files"]
    for section_name, key, required in NAMED_FILES:
        section = config.get(section_name)
        if section is None and not required:
            continue
        if not isinstance(section, dict):
            raise BundleError(f"{where}: {section_name} in config.yaml must be a mapping")
        if key not in section and not required:
            continue
        name, label = section.get(key), f"{section_name}.{key}"
        if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name == CONFIG_FILE:
            raise BundleError(f"{where}: {label} names {name!r}, which is not a plain file name inside the bundle "
                              "(no folders, no '..', not absolute); refusing it")
        if name not in files:
            raise BundleError(f"{where}: {label} names {name!r}, which files does not list with its sha256; refusing it")
    for name in LABEL_FILES:
        if name not in files:
            raise BundleError(f"{where}: the label table's {name} is not listed in files with its sha256")
    for name in OPTIONAL_LABEL_FILES:
        if name not in files and folder is not None and os.path.lexists(folder / name):
            raise BundleError(f"{where}: {name} is in the folder but not listed in files with its sha256, "
                              "and the label table would read it; remove it or rebuild the bundle")


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
    """Write ``config.yaml`` for ``folder`` (whole or not at all), recording the sha256 and size
    of every listed file."""
    folder = Path(folder)
    config = dict(config)
    config["format_version"] = FORMAT_VERSION
    config["files"] = {name: sha256_of(folder / name) for name in sorted(config.get("files") or {})}
    config["sizes"] = {name: (folder / name).stat().st_size for name in config["files"]}
    path = folder / CONFIG_FILE
    atomic_write(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode("utf-8"))
    return path


def download_bundle(url: str, cache_dir: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT,
                    deadline: float | None = None) -> Path:
    """Fetch the bundle whose ``config.yaml`` is at the http(s) ``url``; return the local folder.

    Files are fetched next to the config's URL, each capped by the size the config declares
    (``sizes``) and all together by :data:`MAX_DOWNLOAD_BYTES`, checked against their sha256
    and kept in ``cache_dir`` (default ``~/.cache/image_tag_suggestion``); a second call
    reuses files whose hash still matches. Pointers are followed (:func:`pointer_target`).
    ``timeout`` bounds each socket operation, ``deadline`` (seconds) the whole download; by
    default it grows with the declared sizes (see ``download.Deadline``).
    """
    if not is_url(url):
        raise BundleError(f"{url}: only http(s) URLs are downloaded")
    from .download import Deadline

    where, config, config_bytes, clock = _follow_pointers(url, timeout, Deadline(deadline))
    return _download_files(where, config, config_bytes, cache_dir, timeout, clock)


def _download_files(url: str, config: dict, config_bytes: bytes, cache_dir, timeout: float, deadline) -> Path:
    """Download the files of the bundle config ``config`` (fetched from ``url``) into the cache,
    within ``deadline`` (a ``download.Deadline``)."""
    from .download import DownloadError, download_verified_within

    files, sizes = _listed_files(config, url), config.get("sizes") or {}
    _check_named_files(config, url)  # before anything is fetched
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
        raise BundleError(f"{url}: config.yaml's sizes must map file names to byte counts")
    declared = sum(sizes.get(name, 0) for name in files)
    if declared > MAX_DOWNLOAD_BYTES:
        raise BundleError(f"{url}: the bundle declares more than {MAX_DOWNLOAD_BYTES} bytes; refusing it "
                          "(IMAGE_TAGS_MAX_DOWNLOAD raises the limit)")
    deadline.expect(declared)
    folder = Path(cache_dir or default_cache_dir()) / hashlib.sha256(config_bytes).hexdigest()[:24]  # see cached_bundles
    folder.mkdir(parents=True, exist_ok=True)
    budget = MAX_DOWNLOAD_BYTES
    for name, digest in files.items():
        target = folder / name
        if target.is_file() and sha256_of(target) == digest:
            continue
        try:
            budget -= download_verified_within(_child_url(url, name), target, str(digest), timeout,
                                               min(budget, sizes.get(name, budget)), deadline)
        except DownloadError as exc:
            raise BundleError(str(exc)) from None
    atomic_write(folder / CONFIG_FILE, config_bytes)
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


def _parse_config(data: bytes, url: str) -> dict:
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise BundleError(f"{url}: config is not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{url}: config is not a YAML mapping")
    return config


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


def _has_scheme(location: str) -> bool:
    """A URL of some scheme (``ftp://``, ``file:``...), as opposed to a path on disk."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location)) or location.startswith("file:")


def is_url(location: str) -> bool:
    """An http(s) URL: the only kind of address a bundle is downloaded from."""
    return urllib.parse.urlsplit(location).scheme in ("http", "https") and "://" in location
