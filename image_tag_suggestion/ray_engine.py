"""Tagging on Ray Data, for collections beyond one machine (``image-tags index --engine ray``).

Each Ray worker loads the bundle's LiteRT encoder once (a callable class in
``map_batches``) and tags batches of files; the driver receives plain rows and
writes the same SQLite index as the local engine. On a cluster, the photos and
the bundle must sit at the same paths on every node (shared storage), and
``RAY_ADDRESS`` (or ``ray start --address``) points at the cluster; without it a
local Ray instance uses this machine's cores. Ray is an optional extra:
``pip install 'image_tag_suggestion[ray]'``.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from .bundle import Bundle, load_bundle
from .predictors import ImagePredictor, LabelPredictor
from .scoring import Tag
from .tagging import TagResult, tag_files


class _Tagger:
    """One per Ray worker: the model loads in __init__, once, not per batch."""

    def __init__(self, bundle_folder: str, top_k: int, min_score: float):
        bundle = load_bundle(bundle_folder)
        self.image_predictor = ImagePredictor(bundle, num_threads=1)  # Ray gives each worker one CPU
        self.label_predictor = LabelPredictor(bundle)
        self.top_k, self.min_score = top_k, min_score

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        results = tag_files(paths, self.image_predictor, self.label_predictor, top_k=self.top_k,
                            min_score=self.min_score, order="score", batch_size=len(paths), workers=1)
        rows = {"path": [], "embedding": [], "tags": [], "error": []}
        for result in results:
            rows["path"].append(result.file)
            rows["embedding"].append(result.embedding.astype(np.float32).tobytes() if result.ok else b"")
            rows["tags"].append(json.dumps([list(t) for t in result.tags]) if result.ok else "[]")
            rows["error"].append(result.error or "")
        return {key: np.array(values, dtype=object) for key, values in rows.items()}


def tag_files_on_ray(
    files: Sequence[str],
    bundle: Bundle,
    top_k: int,
    min_score: float,
    batch_size: int = 32,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> Iterator[TagResult]:
    """Yield a :class:`TagResult` per file (order not guaranteed), tagged on Ray workers."""
    if not files:
        return
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    workers = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    dataset = ray.data.from_items([{"path": path} for path in files]).map_batches(
        _Tagger,
        fn_constructor_kwargs={"bundle_folder": str(bundle.folder), "top_k": top_k, "min_score": min_score},
        batch_size=batch_size, batch_format="numpy", concurrency=workers, num_cpus=1,
    )
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for path, embedding, tags, error in zip(batch["path"], batch["embedding"], batch["tags"], batch["error"]):
            if error:
                yield TagResult(str(path), error=str(error))
            else:
                yield TagResult(str(path), tags=[Tag(*t) for t in json.loads(tags)],
                                embedding=np.frombuffer(embedding, dtype=np.float32))
        if on_done:
            on_done(len(batch["path"]))
