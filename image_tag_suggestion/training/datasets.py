"""Labelled images from Open Images V6, a ``path,tags`` CSV, or one folder per tag,
all as :class:`LabeledDataset`: image paths with positive and verified-negative labels.

Open Images keys labels by MID (display names repeat); a row with Confidence 0 is a
verified ABSENCE: never a positive, used as a negative.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..images import IMAGE_EXTENSIONS

OPENIMAGES_LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")
FORMATS = ("openimages", "csv", "folders")


class DatasetError(ValueError):
    """The data is missing or not in the expected shape; the message says what to fix."""


@dataclass(frozen=True)
class Example:
    path: str
    positives: tuple[int, ...]
    negatives: tuple[int, ...] = ()


@dataclass
class LabeledDataset:
    """Images with label indices into ``label_ids``/``label_names``.

    ``skipped`` counts what was left out and why (missing image, no usable label...).
    ``closed_world``: True when absent labels count as negatives (CSV and folders, where
    every tag of an image is listed); False for Open Images, where only verified
    negatives are negatives.
    """

    label_ids: list[str]
    label_names: list[str]
    examples: list[Example]
    closed_world: bool
    skipped: Counter = field(default_factory=Counter)

    def __post_init__(self):
        if not self.examples:
            detail = ", ".join(f"{n} {why}" for why, n in self.skipped.items()) or "nothing found"
            raise DatasetError(f"no usable images ({detail})")
        if len(self.label_ids) < 2:
            raise DatasetError(f"need at least 2 labels to learn from, found {len(self.label_ids)}")

    def split(self, val_fraction: float, seed: int = 0) -> tuple["LabeledDataset", "LabeledDataset"]:
        """A reproducible train/validation split (at least one image on each side)."""
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1)
        pick = lambda idx: LabeledDataset(self.label_ids, self.label_names, [self.examples[i] for i in sorted(idx)], self.closed_world)
        return pick(order[n_val:]), pick(order[:n_val])

    def label_matrices(self):
        """(positive, verified) boolean matrices, images x labels; in a closed world every pair is verified."""
        import numpy as np

        positive = np.zeros((len(self.examples), len(self.label_ids)), dtype=bool)
        verified = np.zeros_like(positive)
        for row, example in enumerate(self.examples):
            positive[row, list(example.positives)] = True
            verified[row, list(example.positives) + list(example.negatives)] = True
        if self.closed_world:
            verified[:] = True
        return positive, verified

    def summary(self) -> str:
        counts = Counter(p for e in self.examples for p in e.positives)
        skipped = "; skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) if self.skipped else ""
        return (f"{len(self.examples)} images, {len(self.label_ids)} labels, "
                f"{sum(counts.values())} positive and {sum(len(e.negatives) for e in self.examples)} verified negative labels{skipped}")


def load_dataset(data: str | os.PathLike, fmt: str, images: str | os.PathLike | None = None) -> LabeledDataset:
    """Read ``data`` in format ``openimages``, ``csv`` or ``folders``."""
    if fmt == "openimages":
        return read_openimages(data, images)
    if fmt == "csv":
        return read_csv_labels(data, images)
    if fmt == "folders":
        return read_folders(data)
    raise DatasetError(f"unknown format {fmt!r}; choose from {FORMATS}")


def read_openimages(folder: str | os.PathLike, images: str | os.PathLike | None = None) -> LabeledDataset:
    """Open Images V6 as downloaded: ``oidv6-class-descriptions.csv``, the human image-level
    label CSVs (``*human-imagelabels*.csv``) and ``<ImageID>.jpg`` files in ``images``
    (default: ``folder/images``, else ``folder``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    descriptions = _first(folder, ["oidv6-class-descriptions.csv", "class-descriptions.csv", "class-descriptions-boxable.csv"])
    label_files = sorted(folder.glob("*human-imagelabels*.csv"))
    if not label_files:
        raise DatasetError(f"{folder}: no *human-imagelabels*.csv label files")
    image_dir = Path(images) if images else (folder / "images" if (folder / "images").is_dir() else folder)

    names = _read_descriptions(descriptions)
    positives: dict[str, set[str]] = defaultdict(set)
    negatives: dict[str, set[str]] = defaultdict(set)
    skipped: Counter = Counter()
    for label_file in label_files:
        with open(label_file, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in OPENIMAGES_LABEL_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{label_file.name}: missing columns {missing}; found {reader.fieldnames}")
            for row in reader:
                try:
                    confidence = float(row["Confidence"])
                except ValueError:
                    skipped["rows with a bad Confidence"] += 1
                    continue
                (positives if confidence >= 0.5 else negatives)[row["ImageID"]].add(row["LabelName"])
    vocabulary = sorted({mid for labels in positives.values() for mid in labels})
    unknown = [mid for mid in vocabulary if mid not in names]
    if unknown:
        skipped["labels without a description (kept, named by MID)"] += len(unknown)
    index = {mid: i for i, mid in enumerate(vocabulary)}
    examples = []
    for image_id in sorted(set(positives) | set(negatives)):
        pos = positives.get(image_id, set())
        neg = negatives.get(image_id, set()) - pos  # a label both verified and refuted: trust neither as negative
        if not pos:
            skipped["images with no positive label"] += 1
            continue
        path = image_dir / f"{image_id}.jpg"
        if not path.is_file():
            skipped["missing image files"] += 1
            continue
        examples.append(Example(str(path), tuple(sorted(index[m] for m in pos)),
                                tuple(sorted(index[m] for m in neg if m in index))))
    return LabeledDataset(vocabulary, [names.get(m, m) for m in vocabulary], examples, closed_world=False, skipped=skipped)


def _first(folder: Path, candidates: list[str]) -> Path:
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"{folder}: none of {candidates} found")


def _read_descriptions(path: Path) -> dict[str, str]:
    names = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) < 2 or row[0] == "LabelName":
                continue
            names[row[0]] = row[1]
    if not names:
        raise DatasetError(f"{path.name}: no MID,DisplayName rows")
    return names


def read_csv_labels(csv_path: str | os.PathLike, root: str | os.PathLike | None = None) -> LabeledDataset:
    """A CSV with columns ``path,tags`` (tags separated by ``;``); relative paths are
    resolved against ``root`` (default: the CSV's folder)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: no such file")
    root = Path(root) if root else csv_path.parent
    rows = []
    skipped: Counter = Counter()
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "tags"} <= set(reader.fieldnames):
            raise DatasetError(f"{csv_path.name}: expected columns path,tags; found {reader.fieldnames}")
        for row in reader:
            tags = sorted({t.strip() for t in (row["tags"] or "").split(";") if t.strip()})
            path = Path(row["path"] or "")
            path = path if path.is_absolute() else root / path
            if not tags:
                skipped["images with no tags"] += 1
            elif not path.is_file():
                skipped["missing image files"] += 1
            else:
                rows.append((str(path), tags))
    return _closed_world(rows, skipped)


def read_folders(folder: str | os.PathLike) -> LabeledDataset:
    """``folder/<tag>/*.jpg``: each image is a positive of its folder's tag."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    rows = []
    for tag_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(tag_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                rows.append((str(path), [tag_dir.name]))
    return _closed_world(rows, Counter())


def _closed_world(rows: list[tuple[str, list[str]]], skipped: Counter) -> LabeledDataset:
    tags = sorted({t for _, ts in rows for t in ts})
    index = {t: i for i, t in enumerate(tags)}
    examples = [Example(path, tuple(index[t] for t in ts)) for path, ts in rows]
    return LabeledDataset(tags, list(tags), examples, closed_world=True, skipped=skipped)
