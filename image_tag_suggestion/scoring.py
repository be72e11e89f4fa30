"""Embeddings -> tag scores -> ranked tags. The one scoring rule for every bundle.

``logits = scale * (E @ L.T) + bias + offset`` (E, L unit vectors when
``normalize``), then an activation:

- ``softmax``: classifier bundles (ImageNet); a broader tag scores the sum of its
  classes' probabilities, so "dog" >= "golden retriever".
- ``sigmoid``: calibrated embedding bundles (``scale``/``offset`` fitted on a
  validation split, so 0.5 means even odds).
- ``identity``: uncalibrated embedding bundles, with ``scale = offset = 0.5`` this is
  ``(1 + cos) / 2 = 1 - d^2 / 4`` for unit vectors (d the Euclidean distance).

Calibration. A softmax share is not the probability that a tag is right: on real photos
the model is overconfident about its exact class and about right for broader sums. A
bundle may carry ``calibration``: per group of tags (``specific`` classes, ``broader``
sums, ``faces``), ``P(right) = sigmoid(slope * logit(score) + intercept)``, fitted on
labelled photos; then every score a user sees is that probability, and one cut-off means
the same for every tag.

People. When the bundle has a face detector, an embedding ends with the face signals of
``faces.py`` (the three best face scores and the best face's height share). "person" is
the calibrated best face score (or its member classes' calibrated sum, if higher). A face
is *present* when the detector gives it at least ``face_present``; "portrait" scores as
"person" when exactly one face is present and it fills at least ``portrait_min_height``
of the picture's height, "group of people" when three faces or more are present.

Scenes. When the bundle has a scene head (see ``labels.py``), each of its rows scores one tag
as ``sigmoid(w . e + b)`` on the unit-length image embedding ``e``: a logistic regression
fitted on labelled photos, so its score is already a probability. A tag the head scores that
is also scored otherwise (a class, a broader or people tag) keeps the higher of the two.

Photo properties. A scene tag with a ``signal`` ("black and white") is scored from that pixel
signal, which the embedding carries after the face signals (``properties.py``).

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
from .faces import SIGNALS
from .properties import score as property_score

ACTIVATIONS = ("softmax", "sigmoid", "identity")
ORDERS = ("specific", "score")


class Tag(NamedTuple):
    """One suggested tag."""

    label: str
    score: float
    id: str
    broader: bool


CALIBRATED_GROUPS = ("specific", "broader", "faces")


@dataclass(frozen=True)
class Calibration:
    """``P(right) = sigmoid(slope * logit(score) + intercept)`` for one group of tags."""

    slope: float = 1.0
    intercept: float = 0.0

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        clipped = np.clip(scores, 1e-7, 1.0 - 1e-7)
        logits = np.float32(self.slope) * np.log(clipped / (1.0 - clipped)) + np.float32(self.intercept)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


@dataclass(frozen=True)
class ScoringRule:
    """How embeddings become scores; read from a bundle's ``scoring`` section."""

    activation: str = "softmax"
    normalize: bool = False
    scale: float = 1.0
    offset: float = 0.0
    calibration: dict | None = None  # group ("specific", "broader", "faces") -> Calibration
    portrait_min_height: float = 0.15
    face_present: float = 0.5

    @classmethod
    def from_config(cls, config: dict) -> "ScoringRule":
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown scoring keys {sorted(unknown)}")
        values = dict(config)
        if values.get("calibration") is not None:
            groups = values["calibration"]
            if not isinstance(groups, dict) or set(groups) - set(CALIBRATED_GROUPS):
                raise ValueError(f"scoring.calibration maps {CALIBRATED_GROUPS} to slope and intercept")
            try:
                values["calibration"] = {group: Calibration(float(v["slope"]), float(v["intercept"]))
                                         for group, v in groups.items()}
            except (KeyError, TypeError, ValueError):
                raise ValueError("scoring.calibration: each group needs a numeric slope and intercept") from None
        rule = cls(**values)
        if rule.activation not in ACTIVATIONS:
            raise ValueError(f"scoring.activation must be one of {ACTIVATIONS}, not {rule.activation!r}")
        return rule

    def to_config(self) -> dict:
        config = {"activation": self.activation, "normalize": self.normalize, "scale": self.scale, "offset": self.offset,
                  "portrait_min_height": self.portrait_min_height, "face_present": self.face_present}
        if self.calibration:
            config["calibration"] = {group: {"slope": c.slope, "intercept": c.intercept}
                                     for group, c in self.calibration.items()}
        return config


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
        self.face_dim = len(SIGNALS) if table.people else 0
        self.input_dim = table.dim + self.face_dim + len(table.property_signals)
        if table.head_ids:
            self._head_weights_t = np.ascontiguousarray(table.head_weights.T, dtype=np.float32)
        # (the tag's column in the scores, its signal's column among the properties, the signal)
        self._property_columns = [(table.ids.index(t.id), table.property_signals.index(t.signal), t.signal)
                                  for t in table.scenes if t.signal]

    def scores(self, embeddings: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """(N, D) or (D,) embeddings -> (N, n_tags) scores: classes, broader tags, people tags.

        ``calibrated=False`` gives the model's own scores (softmax shares and their sums,
        face scores), which is what a calibration is fitted on.
        """
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if embeddings.shape[1] != self.input_dim:
            raise ValueError(f"embedding has {embeddings.shape[1]} values, the labels need {self.input_dim}")
        signals = embeddings[:, self.table.dim : self.table.dim + self.face_dim]
        properties = embeddings[:, self.table.dim + self.face_dim :]
        embeddings = embeddings[:, : self.table.dim]
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
        calibration = (self.rule.calibration or {}) if calibrated else {}
        identity = Calibration(1.0, 0.0)
        specific, broader = calibration.get("specific", identity), calibration.get("broader", identity)
        scores = [specific(logits) if "specific" in calibration else logits]
        if self.table.broader_ids:
            sums = logits @ self.table.membership
            scores.append(broader(sums) if "broader" in calibration else sums)
        if self.table.people:
            scores.append(self._people(logits, signals, calibration.get("faces", identity), broader, bool(calibration)))
        if self.table.scenes:
            scores.append(np.zeros((len(embeddings), len(self.table.scenes)), np.float32))
        scores = np.concatenate(scores, axis=1) if len(scores) > 1 else scores[0]
        if self.table.head_ids:
            unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
            head = 1.0 / (1.0 + np.exp(-(unit @ self._head_weights_t + self.table.head_bias)))
            targets = self.table.head_targets
            scores[:, targets] = np.maximum(scores[:, targets], head)
        for column, signal_column, signal in self._property_columns:
            scores[:, column] = property_score(signal, properties[:, signal_column])
        return scores

    def _people(self, probabilities, signals, faces: Calibration, broader: Calibration, calibrated: bool) -> np.ndarray:
        """The people tags' scores from the face signals (module docstring)."""
        best, second, third, height = (signals[:, i] for i in range(len(SIGNALS)))
        person = faces(best) if calibrated else best
        present = self.rule.face_present
        one_face = (best >= present) & (second < present) & (height >= self.rule.portrait_min_height)
        by_signal = {"person": person, "portrait": np.where(one_face, person, 0.0),
                     "group": np.where(third >= present, person, 0.0)}
        scores = np.stack([by_signal[tag.signal] for tag in self.table.people], axis=1).astype(np.float32)
        members = probabilities @ self.table.people_membership
        from_classes = broader(members) if calibrated else members
        has_members = self.table.people_membership.any(axis=0)
        return np.where(has_members, np.maximum(scores, from_classes), scores).astype(np.float32)

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
