"""Labelled image files -> pixels, exactly as serving decodes them.

Training must see what serving will see: the same decoder (Pillow through
``images.load_image``: EXIF orientation applied, transparency on white, CMYK and
16-bit images made 8-bit RGB) and, where it computes what serving computes (the
frozen backbone's features, the validation embeddings the calibration is fitted
on), the same resize and centre crop (``Preprocessing``). A photo that cannot be
read is left out and counted, never the end of a run.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from ..images import DEFAULT_MAX_PIXELS, ImageError, load_image, probe_image
from ..preprocessing import Preprocessing
from .datasets import Example, LabeledDataset

UNREADABLE = "unreadable images"


def _workers() -> int:
    return min(8, (os.cpu_count() or 1) + 1)


def readable(dataset: LabeledDataset, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[LabeledDataset, list[str]]:
    """The dataset without the images whose file cannot be opened as an image (read from
    each file's header, no decoding), and those images' errors."""
    def check(example: Example) -> str | None:
        try:
            probe_image(example.path, max_pixels)
            return None
        except ImageError as exc:
            return str(exc)

    with ThreadPoolExecutor(_workers()) as pool:
        errors = list(pool.map(check, dataset.examples))
    return keep(dataset, [i for i, e in enumerate(errors) if e is None]), [e for e in errors if e is not None]


def keep(dataset: LabeledDataset, rows: list[int]) -> LabeledDataset:
    """``dataset`` with only the examples at ``rows``; the others counted as unreadable."""
    skipped = dataset.skipped.copy()
    if len(rows) < len(dataset.examples):
        skipped[UNREADABLE] += len(dataset.examples) - len(rows)
    return LabeledDataset(dataset.label_ids, dataset.label_names, [dataset.examples[i] for i in rows],
                          dataset.closed_world, skipped)


def decode_for_training(path, min_size: int) -> np.ndarray:
    """One image, upright RGB uint8, at least ``min_size`` on its short side where the format
    allows a reduced decode (for ``tf.numpy_function``: ``path`` may come as bytes)."""
    return load_image(path.decode() if isinstance(path, bytes) else path, min_size=min_size)


def serving_batches(dataset: LabeledDataset, preprocessing: Preprocessing, batch_size: int = 32
                    ) -> Iterator[tuple[np.ndarray, list[int], list[int]]]:
    """(normalised crops as serving makes them, how many crops each image has, the dataset
    rows they are) batch by batch; rows whose image cannot be decoded are left out. Serving
    averages the outputs of an image's crops (several along a panorama)."""
    def tiles(example: Example) -> np.ndarray | None:
        try:
            return preprocessing.tiles(load_image(example.path, min_size=preprocessing.resize))
        except ImageError:
            return None

    with ThreadPoolExecutor(_workers()) as pool:
        for start in range(0, len(dataset.examples), batch_size):
            crops = list(pool.map(tiles, dataset.examples[start : start + batch_size]))
            rows = [start + i for i, c in enumerate(crops) if c is not None]
            if rows:
                kept = [c for c in crops if c is not None]
                yield preprocessing.normalise(np.concatenate(kept)), [len(c) for c in kept], rows
