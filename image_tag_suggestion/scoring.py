"""Embeddings -> tag scores -> ranked tags. The one scoring rule for every bundle.

``logits = scale * (E @ L.T) + bias + offset`` (E, L unit vectors when
``normalize``), then an activation:

- ``softmax``: classifier bundles (ImageNet); a broader tag scores the sum of its
  classes' probabilities, so "dog" >= "golden retriever".
- ``sigmoid``: calibrated embedding bundles (``scale``/``offset`` fitted on a
  validation split, so 0.5 means even odds).
- ``identity``: uncalibrated embedding bundles, with ``scale = offset = 0.5`` this is
  ``(1 + cos) / 2 = 1 - d^2 / 4`` for unit vectors (d the Euclidean distance).

Ranking. A broader tag always scores at least as high as any class below it, so
ordering by score alone puts "animal" and "mammal" first. The default order is
by *expected specificity*: ``score * specificity``, where a class has
specificity 1 and a broader tag covering n of N classes has
``1 - log(n) / log(N)`` (the share of the label's information it keeps).
``order="score"`` sorts by the score itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .labels import LabelTable

ACTIVATIONS = ("softmax", "sigmoid", "identity")
ORDERS = ("specific", "score")


class Tag(NamedTuple):
    """One suggested tag."""

    label: str
    score: float
    id: str
    broader: bool


@dataclass(frozen=True)
class ScoringRule:
    """How embeddings become scores; read from a bundle's ``scoring`` section."""

    activation: str = "softmax"
    normalize: bool = False
    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def from_config(cls, config: dict) -> "ScoringRule":
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown scoring keys {sorted(unknown)}")
        rule = cls(**config)
        if rule.activation not in ACTIVATIONS:
            raise ValueError(f"scoring.activation must be one of {ACTIVATIONS}, not {rule.activation!r}")
        return rule

    def to_config(self) -> dict:
        return {"activation": self.activation, "normalize": self.normalize, "scale": self.scale, "offset": self.offset}


class Scorer:
    """Holds a label table prepared for fast scoring (unit rows cached, one matmul a batch)."""

    def __init__(self, table: LabelTable, rule: ScoringRule):
        self.table, self.rule = table, rule
        weights = table.embeddings
        if rule.normalize:
            weights = weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)
        self._weights_t = np.ascontiguousarray(weights.T, dtype=np.float32)
        bias = np.zeros(table.n_classes, np.float32) if table.bias is None else table.bias
        self._bias = (bias + np.float32(rule.offset)).astype(np.float32)
        n = max(table.n_classes, 2)
        self.specificity = np.clip(1.0 - np.log(table.coverage) / np.log(n), 0.0, 1.0).astype(np.float32)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) or (D,) embeddings -> (N, n_tags) scores, classes then broader tags."""
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if embeddings.shape[1] != self._weights_t.shape[0]:
            raise ValueError(f"embedding has {embeddings.shape[1]} dimensions, the labels {self._weights_t.shape[0]}")
        if self.rule.normalize:
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        logits = np.float32(self.rule.scale) * (embeddings @ self._weights_t) + self._bias
        if self.rule.activation == "softmax":
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
        elif self.rule.activation == "sigmoid":
            logits = 1.0 / (1.0 + np.exp(-logits))
        else:
            logits = np.clip(logits, 0.0, 1.0)
        if self.table.broader_ids:
            return np.concatenate([logits, logits @ self.table.membership], axis=1)
        return logits

    def rank(
        self,
        scores: np.ndarray,
        top_k: int | None = 20,
        min_score: float = 0.0,
        include_broader: bool = True,
        order: str = "specific",
    ) -> list[Tag]:
        """The best ``top_k`` tags of one image's ``scores`` (``None``: all that pass ``min_score``)."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
        key = scores * self.specificity if order == "specific" else scores.copy()
        key[scores < min_score] = -np.inf
        if not include_broader:
            key[self.table.is_broader] = -np.inf
        candidates = np.flatnonzero(np.isfinite(key))
        if top_k is not None and top_k < len(candidates):
            top_k = max(int(top_k), 0)
            candidates = candidates[np.argpartition(-key[candidates], top_k - 1)[:top_k]] if top_k else candidates[:0]
        best = candidates[np.lexsort((-scores[candidates], -key[candidates]))]
        table = self.table
        return [Tag(table.names[i], float(scores[i]), table.ids[i], bool(table.is_broader[i])) for i in best]
