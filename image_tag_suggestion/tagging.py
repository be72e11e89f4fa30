"""Many image files -> tags, forgiving: a bad file becomes an error record and the
run goes on. Decoding runs in threads (Pillow releases the GIL) while the
encoder works on the previous batch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .images import IMAGE_EXTENSIONS, ImageError, ImageSource, describe_source
from .predictors import ImagePredictor, LabelPredictor
from .scoring import Tag


@dataclass
class TagResult:
    """The outcome for one input: ``tags`` or ``error``, never both.

    ``more``: when other models were asked for too (``tag_files(..., also=...)``),
    their tags by model name. Scores of different models mean different things (a
    softmax share, a calibrated probability), so each model's tags stay a group of
    their own rather than one merged ranking.
    """

    file: str
    tags: list[Tag] | None = None
    error: str | None = None
    embedding: np.ndarray | None = None
    pixels: np.ndarray | None = None  # the upright decoded image, when asked for
    more: dict[str, list[Tag]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def find_images(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given, folders walked recursively (image extensions only, sorted).

    A path that does not exist is kept, so that it is reported as an error
    rather than silently dropped.
    """
    found: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(
                    os.path.join(root, name)
                    for name in sorted(files)
                    if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".")
                )
        else:
            found.append(path)
    return found


def tag_files(
    files: Sequence[ImageSource],
    image_predictor: ImagePredictor,
    label_predictor: LabelPredictor,
    top_k: int | None = 20,
    min_score: float | None = None,
    include_broader: bool = True,
    order: str | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
    keep_pixels_min_size: int | None = None,
    also: Sequence[tuple[str, ImagePredictor, LabelPredictor]] = (),
) -> Iterator[TagResult]:
    """Yield one :class:`TagResult` per file (path, upload or bytes), in input order.

    ``keep_pixels_min_size``: also return each decoded image, with its short side
    at least this big (for showing it); by default pixels are not kept.
    ``also``: more models ``(name, image predictor, label predictor)`` to tag each image
    with; an image is decoded once for all of them.
    """
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    models = [(None, image_predictor, label_predictor), *also]
    min_size = max([keep_pixels_min_size or 0] + [ip.preprocessing.resize for _, ip, _ in models])

    def prepare(file):
        try:
            pixels = image_predictor.load(file, min_size=min_size)
            ready = [ip.prepare(pixels) for _, ip, _ in models]
            return ready, None, pixels if keep_pixels_min_size else None
        except ImageError as exc:
            return None, str(exc), None
        except MemoryError:
            return None, f"{describe_source(file)}: out of memory while decoding", None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
        # Keep one batch decoding ahead of the one being encoded.
        pending = [pool.map(prepare, batch) for batch in batches[:2]]
        for index, batch in enumerate(batches):
            prepared = list(pending[index])
            if index + 2 < len(batches):
                pending.append(pool.map(prepare, batches[index + 2]))
            good = [i for i, (ready, _, _) in enumerate(prepared) if ready is not None]
            embeddings, tags = [], []
            for m, (_, ip, lp) in enumerate(models):
                if not good:
                    break
                embeddings.append(ip.encode([prepared[i][0][m] for i in good]))
                tags.append(lp.predict_batch(embeddings[-1], top_k, min_score, include_broader, order))
            row_of = dict(zip(good, range(len(good))))
            for position, file in enumerate(batch):
                name = describe_source(file)
                if position not in row_of:
                    yield TagResult(name, error=prepared[position][1])
                    continue
                row = row_of[position]
                more = {models[m][0]: tags[m][row] for m in range(1, len(models))}
                yield TagResult(name, tags=tags[0][row], embedding=embeddings[0][row], pixels=prepared[position][2], more=more)
            if on_done:
                on_done(len(batch))
