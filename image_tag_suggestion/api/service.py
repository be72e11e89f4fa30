"""The models, loaded once, and a pool of predictors that every request shares.

A LiteRT interpreter must not run in two threads at once, so each pool worker owns one
``ImagePredictor`` per model (one encoder thread each: the pool, sized to the cores, is
the parallelism). Label tables are read-only and shared. The tags come from
``tagging.tag_files``, the function behind ``image-tags tag``: same decoding, same
scores, same order, same cut-off.
"""

from __future__ import annotations

import asyncio
import io
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from ..bundle import load_bundle
from ..images import DEFAULT_MAX_PIXELS
from ..predictors import ImagePredictor, LabelPredictor
from ..seed_model import resolve_model
from ..tagging import TagResult, tag_files
from .auth import Credentials
from .limits import Admission, DeadlineExceeded, Slot

DEFAULT_MAX_BODY = 10_000_000


@dataclass
class Settings:
    """Everything ``image-tags serve`` was told; plain data, so Ray can ship it to replicas."""

    models: Sequence[str] = ("default",)
    pool: int = field(default_factory=lambda: os.cpu_count() or 1)
    queue: int | None = None  # waiting places; None: 4 per pool worker
    max_body: int = DEFAULT_MAX_BODY
    max_pixels: int = DEFAULT_MAX_PIXELS
    deadline: float = 30.0
    credentials: Credentials = field(default_factory=Credentials)
    test_delay: float = 0.0  # testing only: each job sleeps this long first, to fill the queue on purpose

    @property
    def queue_size(self) -> int:
        return 4 * self.pool if self.queue is None else self.queue


@dataclass
class Model:
    """One loaded bundle as the API describes it."""

    name: str
    bundle: object
    labels: LabelPredictor
    _info: dict = field(default_factory=dict, repr=False)

    def tag_info(self, tag_id: str) -> tuple[list[str], list[str]]:
        """(broader tags above it, widest first; its synonyms): Rekognition's Parents and Aliases."""
        if tag_id not in self._info:
            table = self.labels.labels
            self._info[tag_id] = (table.broader_chain(tag_id), list(table.synonyms[table.ids.index(tag_id)]))
        return self._info[tag_id]

    def describe(self) -> dict:
        table = self.labels.labels
        return {"name": self.name, "kind": self.bundle.kind, "vocabulary": len(table), "classes": table.n_classes,
                "broader": len(table.broader_ids), "people": len(table.people), "min_score": self.labels.default_min_score}


@dataclass
class Options:
    """What a request may choose (the CLI's flags of the same names)."""

    top_k: int | None = 20
    min_score: float | None = None
    include_broader: bool = True
    model: str | None = None  # one model by name; None: every model, as the CLI with several --model


class NamedBytes(io.BytesIO):
    """An upload with a name, for ``tag_files``' records and messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name


class TaggingService:
    """Loads the models and answers ``tag`` calls from a bounded pool."""

    def __init__(self, settings: Settings, report=None):
        self.settings = settings
        self.models: list[Model] = []
        bundles = []
        for location in settings.models or ["default"]:
            bundle = load_bundle(resolve_model(location, report))
            taken = [m.name for m in self.models]
            name = bundle.name if bundle.name not in taken else f"{bundle.name} {len(taken) + 1}"
            self.models.append(Model(name, bundle, LabelPredictor(bundle)))
            bundles.append(bundle)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(settings.pool):
            self._idle.put([ImagePredictor(b, num_threads=1, max_pixels=settings.max_pixels) for b in bundles])
        self._executor = ThreadPoolExecutor(settings.pool, thread_name_prefix="image-tags-worker")
        self.admission = Admission(settings.pool + settings.queue_size)

    def model(self, name: str | None) -> Model | None:
        """A model by name (None: the first, what the vendor forms use)."""
        if name is None:
            return self.models[0]
        return next((m for m in self.models if m.name == name), None)

    async def tag(self, slot: Slot, images: list[tuple[str, bytes]], options: Options,
                  embedding: bool = False) -> list[TagResult]:
        """Tag images on a pool worker within the deadline; DeadlineExceeded past it.

        The slot is held by the work as well, so a request abandoned at its deadline keeps
        its place taken until the worker is really done with it."""
        deadline = time.monotonic() + self.settings.deadline
        slot.hold()
        future = self._executor.submit(self._work, images, options, deadline)
        future.add_done_callback(lambda _: slot.release())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.deadline)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no answer within the deadline of {self.settings.deadline:g} s") from None

    def _work(self, images, options: Options, deadline: float) -> list[TagResult]:
        if time.monotonic() > deadline:  # waited in the queue past the deadline: the client has its 504 already
            raise DeadlineExceeded("the deadline passed in the queue")
        predictors = self._idle.get()
        try:
            if self.settings.test_delay:
                time.sleep(self.settings.test_delay)
            chosen = [(m.name, p, m.labels) for m, p in zip(self.models, predictors)
                      if options.model in (None, m.name)]
            (_, image_predictor, label_predictor), also = chosen[0], chosen[1:]
            files = [NamedBytes(data, name) for name, data in images]
            return list(tag_files(files, image_predictor, label_predictor, top_k=options.top_k,
                                  min_score=options.min_score, include_broader=options.include_broader,
                                  batch_size=max(1, len(files)), workers=1, also=also))
        finally:
            self._idle.put(predictors)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
