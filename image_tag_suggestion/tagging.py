"""Many image files -> tags, forgiving: a bad file becomes an error record and the
run goes on. Decoding runs in threads (Pillow and LiteRT release the GIL) while the
encoder works on the previous batch: each decode thread takes a few photos (the face
detector's batch), decodes them, cuts the encoder's crops and finds their faces in one
single-threaded detector call, and hands over only the crops and the face signals.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .encoder import default_num_threads
from .faces import signals
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
    workers = workers or default_num_threads()
    models = [(None, image_predictor, label_predictor), *also]
    min_size = max([keep_pixels_min_size or 0] + [ip.preprocessing.resize for _, ip, _ in models])

    detector = image_predictor.face_detector
    chunk = detector.batch_size if detector is not None else 1

    def decode(file):
        try:
            pixels = image_predictor.load(file, min_size=min_size)
            return pixels, [ip.prepare(pixels) for _, ip, _ in models], None
        except ImageError as exc:
            return None, None, str(exc)
        except MemoryError:
            return None, None, f"{describe_source(file)}: out of memory while decoding"

    def prepare(files_chunk):
        """A few files decoded and prepared in one decode thread, their faces found in one
        detector call there: (ready per model, error, pixels when kept) each."""
        done = [decode(file) for file in files_chunk]
        good = [i for i, (_, ready, _) in enumerate(done) if ready is not None]
        for m, (_, ip, _) in enumerate(models):
            if ip.face_detector is not None and good:
                found = ip.face_detector.detect_batch([done[i][1][m].faces for i in good], concurrent=True)
                for i, faces in zip(good, found):
                    done[i][1][m] = done[i][1][m]._replace(faces=None, people=signals(faces))
        return [(ready, error, pixels if keep_pixels_min_size else None) for pixels, ready, error in done]

    def submit(batch):
        return [pool.submit(prepare, batch[i : i + chunk]) for i in range(0, len(batch), chunk)]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
        # Keep one batch decoding ahead of the one being encoded.
        pending = [submit(batch) for batch in batches[:2]]
        for index, batch in enumerate(batches):
            prepared = [item for future in pending[index] for item in future.result()]
            pending[index] = None
            if index + 2 < len(batches):
                pending.append(submit(batches[index + 2]))
            good = [i for i, (ready, _, _) in enumerate(prepared) if ready is not None]
            embeddings, tags = [], []
            for m, (_, ip, lp) in enumerate(models):
                if not good:
                    break
                embeddings.append(ip.encode([prepared[i][0][m] for i in good]))
                tags.append(lp.predict_batch(embeddings[-1], top_k, min_score, include_broader, order))
            row_of = dict(zip(good, range(len(good))))
            for position, file in enumerate(batch):
                yield _result(describe_source(file), prepared, position, row_of.get(position), embeddings, tags, models)
            if on_done:
                on_done(len(batch))


def _result(name, prepared, position, row, embeddings, tags, models) -> TagResult:
    """The result of ``prepared[position]``, which is let go of: the result is the only holder
    of the photo's pixels (when asked for), so they go when the caller drops it."""
    (_, error, pixels), prepared[position] = prepared[position], None
    if row is None:
        return TagResult(name, error=error)
    more = {models[m][0]: tags[m][row] for m in range(1, len(models))}
    return TagResult(name, tags=tags[0][row], embedding=embeddings[0][row], pixels=pixels, more=more)
