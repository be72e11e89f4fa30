"""Many image files -> tags, forgiving: a bad file becomes an error record and the
run goes on. Three steps overlap, so that every core stays busy:

1. decode (worker threads, a task a file; Pillow releases the GIL): file -> upright pixels ->
   the encoder's crops, the face detector's letterbox and the photo properties; the pixels are
   let go of here;
2. embed (worker threads, a task a batch, two at a time; LiteRT releases the GIL):
   ``ImagePredictor.encode``, the crops through the encoder on a runner of the task's own with
   half the threads (one on two cores), then the photos whose embedding says a person may be
   in them through the face detector (single-threaded); crops and letterboxes are let go of
   after it (a run of one batch, such as an upload in the app, embeds on the caller's thread
   instead, the encoder on all threads: the shortest wait for its results);
3. finish (the caller's thread, one batch behind): tags ranked, results yielded in input order.

There are as many worker threads as the image predictor has (all cores by default): two
batches embedded side by side on half of them each, or one beside decoding, never ask for
more threads than that, and on two cores no thread waits inside LiteRT for another.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

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
    ``workers``: threads for decoding and embedding (default: the image predictor's
    ``num_threads``, all cores unless it was given fewer).
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

    def embed(decoded: list[_Decoded], concurrent: bool) -> list[np.ndarray]:
        good = [d.prepared for d in decoded if d.prepared is not None]
        embeddings = [ip.encode([p[m] for p in good], concurrent) for m, (_, ip, _) in enumerate(models)] if good else []
        for record in decoded:  # crops and letterboxes are let go of; pixels, if asked for, stay
            record.prepared = None
        return embeddings

    def start_embedding(decoded: list[_Decoded]) -> Future:
        if concurrent:
            return pool.submit(embed, decoded, True)
        done: Future = Future()  # a single batch: on this thread, the encoder on all cores
        done.set_result(embed(decoded, False))
        return done

    pool = ThreadPoolExecutor(max_workers=workers or image_predictor.encoder.num_threads)
    try:
        batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
        concurrent = len(batches) > 1
        # Two batches decode ahead of the one being embedded, and one embedded batch waits to be
        # finished while the next is embedded: enough queued work to keep every thread busy.
        decoding = [[pool.submit(decode, file) for file in batch] for batch in batches[:2]]
        embedding: deque[tuple[Sequence[ImageSource], list[_Decoded], Future]] = deque()
        for index, batch in enumerate(batches):
            decoded = [future.result() for future in decoding[index]]
            decoding[index] = None
            embedding.append((batch, decoded, start_embedding(decoded)))
            if index + 2 < len(batches):
                decoding.append([pool.submit(decode, file) for file in batches[index + 2]])
            if len(embedding) > 1:
                yield from _finish(*embedding.popleft(), models, ranking, on_done)
        while embedding:
            yield from _finish(*embedding.popleft(), models, ranking, on_done)
    finally:  # also when the caller stops early: queued work is dropped, not waited for
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Decoded:
    """One file after step 1: prepared for each model (until step 2 is done with it), or the
    error that stopped it."""

    prepared: list[Prepared] | None = None
    error: str | None = None
    pixels: np.ndarray | None = None  # only when the caller asked for them


def _finish(files, decoded: list[_Decoded], embedding: Future, models, ranking, on_done) -> Iterator[TagResult]:
    """Step 3: tags ranked, one result per file."""
    embeddings = embedding.result()
    tags = [lp.predict_batch(e, *ranking) for e, (_, _, lp) in zip(embeddings, models)]
    good = [i for i, d in enumerate(decoded) if d.error is None]
    row_of = dict(zip(good, range(len(good))))
    for position, file in enumerate(files):
        # Made by a call, so that no variable of this generator holds a result while it is out.
        yield _result(describe_source(file), decoded, position, row_of.get(position), embeddings, tags, models)
    if on_done:
        on_done(len(files))


def _result(name, decoded, position, row, embeddings, tags, models) -> TagResult:
    """The result of ``decoded[position]``, which is let go of: the result is the only holder of
    the photo's pixels (when asked for), so they go when the caller drops it."""
    record, decoded[position] = decoded[position], None
    if row is None:
        return TagResult(name, error=record.error)
    more = {models[m][0]: tags[m][row] for m in range(1, len(models))}
    return TagResult(name, tags=tags[0][row], embedding=embeddings[0][row], pixels=record.pixels, more=more)
