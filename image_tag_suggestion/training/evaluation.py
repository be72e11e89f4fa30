"""How good is a bundle on a labelled dataset? Mean average precision with the Open
Images protocol, hit@k, and AP per class. NumPy only: any bundle, through the
serving path (LiteRT), so what is measured is what users get.

Open Images protocol (as ASL, ML-Decoder and CSL report it): for each class, AP over
the images where that class is *verified* (a positive, or a verified negative;
unannotated images are ignored), then the mean over classes with at least one
positive. For CSV and folder datasets every tag of an image is listed, so all other
images count as negatives of a class.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .datasets import LabeledDataset

HIT_KS = (1, 5, 20)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of one ranking: the mean, over relevant items, of the precision at their rank."""
    order = np.argsort(-scores, kind="stable")
    hits = relevant[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


@dataclass
class Evaluation:
    mean_ap: float
    hits: dict[int, float]
    per_class: list[tuple[str, str, float, int, int]] = field(default_factory=list)  # id, name, AP, positives, verified
    images: int = 0
    classes_evaluated: int = 0
    classes_missing_from_model: int = 0
    failed_images: int = 0

    def as_dict(self) -> dict:
        return {
            "mAP": self.mean_ap,
            **{f"hit@{k}": v for k, v in self.hits.items()},
            "images": self.images,
            "failed_images": self.failed_images,
            "classes_evaluated": self.classes_evaluated,
            "classes_missing_from_model": self.classes_missing_from_model,
        }

    def write_per_class_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "name", "ap", "positives", "verified_images"])
            for row in self.per_class:
                writer.writerow([row[0], row[1], "" if np.isnan(row[2]) else f"{row[2]:.4f}", row[3], row[4]])


def evaluate_scores(scores: np.ndarray, dataset: LabeledDataset, available: np.ndarray | None = None) -> Evaluation:
    """``scores``: (images, dataset labels); ``available``: which labels the model knows."""
    n_images, n_labels = scores.shape
    if available is None:
        available = np.ones(n_labels, dtype=bool)
    positive, verified = dataset.label_matrices()
    per_class, aps = [], []
    for label in range(n_labels):
        rows = verified[:, label]
        n_pos = int(positive[rows, label].sum())
        ap = average_precision(scores[rows, label], positive[rows, label]) if available[label] and n_pos else float("nan")
        per_class.append((dataset.label_ids[label], dataset.label_names[label], ap, n_pos, int(rows.sum())))
        if not np.isnan(ap):
            aps.append(ap)
    masked = np.where(available[None, :], scores, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    hits = {}
    has_positive = positive.any(axis=1)
    for k in HIT_KS:
        top = order[:, :k]
        hits[k] = float(np.take_along_axis(positive, top, axis=1).any(axis=1)[has_positive].mean())
    return Evaluation(
        mean_ap=float(np.mean(aps)) if aps else float("nan"),
        hits=hits,
        per_class=per_class,
        images=n_images,
        classes_evaluated=len(aps),
        classes_missing_from_model=int((~available).sum()),
    )


def evaluate_bundle(location, dataset: LabeledDataset, batch_size: int = 32,
                    on_done: Callable[[int], None] | None = None) -> Evaluation:
    """Tag every dataset image with the bundle at ``location`` and evaluate the scores."""
    from ..bundle import load_bundle
    from ..predictors import ImagePredictor, LabelPredictor
    from ..tagging import tag_files

    bundle = load_bundle(location)
    image_predictor, label_predictor = ImagePredictor(bundle), LabelPredictor(bundle)
    columns = {tag_id: i for i, tag_id in enumerate(label_predictor.labels.ids)}
    wanted = np.array([columns.get(tag_id, -1) for tag_id in dataset.label_ids])
    available = wanted >= 0
    kept, rows = [], []
    failed = 0
    results = tag_files([e.path for e in dataset.examples], image_predictor, label_predictor, top_k=1,
                        batch_size=batch_size, on_done=on_done)
    for example, result in zip(dataset.examples, results):
        if result.ok:
            kept.append(example)
            rows.append(result.embedding)
        else:
            failed += 1
    if not kept:
        raise ValueError("no image of the dataset could be read")
    all_scores = label_predictor.scores(np.stack(rows))
    scores = np.where(available[None, :], all_scores[:, np.maximum(wanted, 0)], 0.0)
    subset = LabeledDataset(dataset.label_ids, dataset.label_names, kept, dataset.closed_world)
    evaluation = evaluate_scores(scores, subset, available)
    evaluation.failed_images = failed
    return evaluation
