"""Many image files -> tags, forgiving: a bad file becomes an error record and the
run goes on. Three steps overlap, so that two cores stay busy:

1. decode (threads: Pillow releases the GIL): file -> upright pixels -> the encoder's crops,
   the face detector's letterbox and the photo properties; the pixels are let go of here;
2. encode (the caller's thread, LiteRT on all cores): a batch's crops -> embeddings; the
   photos whose embedding says a person may be in them go to the threads for faces
   (``ImagePredictor.looks_for_faces``), one task a batch;
3. finish (the caller's thread, one batch later): face signals and properties joined to the
   embeddings, tags ranked, results yielded in input order.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .encoder import default_num_threads
from .images import IMAGE_EXTENSIONS, ImageError, ImageSource, describe_source
from .predictors import ImagePredictor, LabelPredictor, Prepared
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
    at least this big (for showing it; those of up to four batches are alive at once, from
    decoding to their results); by default pixels are not kept.
    ``also``: more models ``(name, image predictor, label predictor)`` to tag each image
    with; an image is decoded once for all of them.
    """
    models = [(None, image_predictor, label_predictor), *also]
    min_size = max([keep_pixels_min_size or 0] + [ip.preprocessing.resize for _, ip, _ in models])
    ranking = (top_k, min_score, include_broader, order)

    def decode(file) -> _Decoded:
        try:
            pixels = image_predictor.load(file, min_size=min_size)
            return _Decoded([ip.prepare(pixels) for _, ip, _ in models], pixels=pixels if keep_pixels_min_size else None)
        except ImageError as exc:
            return _Decoded(error=str(exc))
        except MemoryError:
            return _Decoded(error=f"{describe_source(file)}: out of memory while decoding")

    pool = ThreadPoolExecutor(max_workers=workers or default_num_threads())
    try:
        batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
        # One batch decodes ahead of the one being encoded; a batch's faces are looked for while
        # the next one is encoded (its task queued before the decoding of the one after).
        decoding = [[pool.submit(decode, file) for file in batch] for batch in batches[:2]]
        finishing = None
        for index, batch in enumerate(batches):
            decoded = [future.result() for future in decoding[index]]
            decoding[index] = None
            encoded = _encode(batch, decoded, models, pool)
            if index + 2 < len(batches):
                decoding.append([pool.submit(decode, file) for file in batches[index + 2]])
            if finishing is not None:
                yield from _finish(finishing, models, ranking, on_done)
            finishing = encoded
        if finishing is not None:
            yield from _finish(finishing, models, ranking, on_done)
    finally:  # also when the caller stops early: queued decoding is dropped, not waited for
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Decoded:
    """One file after step 1: prepared for each model, or the error that stopped it."""

    prepared: list[Prepared] | None = None
    error: str | None = None
    pixels: np.ndarray | None = None  # only when the caller asked for them


@dataclass
class _Encoded:
    """A batch after step 2: the encoder's embeddings per model, its faces perhaps still being
    looked for (per model: the rows looked at and the future of their face signals, one task that
    runs the detector over them in its fixed batches; None when no photo is looked at). What is
    left of each prepared photo is its properties: crops and letterboxes are let go of here."""

    files: Sequence[ImageSource]
    decoded: list[_Decoded]
    good: list[int]  # positions of the files that decoded
    visual: list[np.ndarray] = field(default_factory=list)
    faces: list[tuple[np.ndarray, Future | None]] = field(default_factory=list)


def _encode(files, decoded: list[_Decoded], models, pool: ThreadPoolExecutor) -> _Encoded:
    """Step 2: the encoder on the caller's thread; the face detector's batches handed to the pool."""
    encoded = _Encoded(files, decoded, [i for i, d in enumerate(decoded) if d.prepared is not None])
    if not encoded.good:
        return encoded
    for m, (_, ip, _) in enumerate(models):
        prepared = [decoded[i].prepared[m] for i in encoded.good]
        visual = ip.embed_crops(prepared)
        look = np.flatnonzero(ip.looks_for_faces(visual))
        job = pool.submit(ip.find_people, [prepared[r] for r in look], True) if len(look) else None
        encoded.visual.append(visual)
        encoded.faces.append((look, job))
        for i in encoded.good:
            decoded[i].prepared[m] = decoded[i].prepared[m]._replace(crops=None, faces=None)
    return encoded


def _finish(encoded: _Encoded, models, ranking, on_done) -> Iterator[TagResult]:
    """Step 3: face signals joined, tags ranked, one result per file."""
    tags, embeddings = [], []
    for m, (_, ip, lp) in enumerate(models):
        if not encoded.good:
            break
        rows, job = encoded.faces[m]
        people = dict(zip(rows.tolist(), job.result())) if job is not None else {}
        embeddings.append(ip.join(encoded.visual[m], people, [encoded.decoded[i].prepared[m] for i in encoded.good]))
        tags.append(lp.predict_batch(embeddings[-1], *ranking))
    row_of = dict(zip(encoded.good, range(len(encoded.good))))
    for position, file in enumerate(encoded.files):
        # Made by a call, so that no variable of this generator holds a result while it is out.
        yield _result(describe_source(file), encoded.decoded, position, row_of.get(position), embeddings, tags, models)
    if on_done:
        on_done(len(encoded.files))


def _result(name, decoded, position, row, embeddings, tags, models) -> TagResult:
    """The result of ``decoded[position]``, which is let go of: the result is the only holder of
    the photo's pixels (when asked for), so they go when the caller drops it."""
    record, decoded[position] = decoded[position], None
    if row is None:
        return TagResult(name, error=record.error)
    more = {models[m][0]: tags[m][row] for m in range(1, len(models))}
    return TagResult(name, tags=tags[0][row], embedding=embeddings[0][row], pixels=record.pixels, more=more)
