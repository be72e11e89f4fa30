"""Scene tags for the built-in bundle: labelled photos -> a scene head -> tags in the label table.

ImageNet's classes name objects; people photograph places (a beach, a city street, a sky at
sunset). The encoder's embedding already tells such scenes apart, so a small head on it is
enough: one logistic regression per scene tag on the unit-length embedding, fitted on hand-
labelled photos whose embeddings ship with the package (``scene_data.npz``, written by
``benchmarks/scene_head_data.py`` from the tuning part of the scene dev set; the held-out part
is never seen here). The vocabulary and its hierarchy are data (``scene_tags.yaml``).

How the head is fitted, and why:
- Few photos per tag (tens), many dimensions (1280): each regression runs in the space of the
  photos' principal components (at most :data:`COMPONENTS`), with an L2 penalty chosen by
  cross-validation; the weights are mapped back to the embedding's space, so serving is one
  matrix product.
- Scores must be probabilities (one "likely" cut-off serves every tag): the out-of-fold logits
  of all tags get one shared Platt scaling, folded into the weights.
- A tag is fitted only with at least :data:`MIN_POSITIVES` positive photos; others are left
  out until the data supports them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..labels import LabelTable, SceneTag

HERE = Path(__file__).resolve().parent
VOCABULARY_FILE = HERE / "scene_tags.yaml"
DATA_FILE = HERE / "scene_data.npz"
MIN_POSITIVES = 4
COMPONENTS = 64
PENALTIES = (0.3, 1.0, 3.0, 10.0, 30.0)  # L2 strengths tried by cross-validation
FOLDS = 5


@dataclass(frozen=True)
class SceneWord:
    word: str
    wnid: str
    name: str
    parent: str  # a word, or ""
    synonyms: tuple[str, ...]
    scored: bool = True  # False: a word of the labels that the head leaves to the classifier
    signal: str = ""  # a photo property scored from this pixel signal (properties.py), not by the head


def read_vocabulary(path: Path = VOCABULARY_FILE, wordnet_dir=None) -> list[SceneWord]:
    """``scene_tags.yaml`` with each WordNet key resolved to its id."""
    from .wordnet import DEFAULT_WORDNET_DIR, read_senses, synset_by_key

    senses = read_senses(wordnet_dir or DEFAULT_WORDNET_DIR)
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["tags"]
    words = [SceneWord(e["word"], f"n{synset_by_key(e['key'], senses):08d}", e.get("name", e["word"]),
                       e.get("parent", ""), tuple(e.get("synonyms", [])), bool(e.get("head", True)) and not e.get("signal"),
                       e.get("signal", "")) for e in entries]
    known = {w.word for w in words}
    unknown = [w.parent for w in words if w.parent and w.parent not in known]
    if unknown:
        raise ValueError(f"{path.name}: parents that are not words of the file: {unknown}")
    return words


def targets(labels: list[list[str]], vocabulary: list[SceneWord]) -> np.ndarray:
    """0/1 (photos, words): each photo's words and every parent above them."""
    index = {w.word: i for i, w in enumerate(vocabulary)}
    parent = {w.word: w.parent for w in vocabulary}
    matrix = np.zeros((len(labels), len(vocabulary)), np.float32)
    for row, words in enumerate(labels):
        for word in words:
            while word in index:
                matrix[row, index[word]] = 1.0
                word = parent[word]
    return matrix


def _unit(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _logistic(x: np.ndarray, y: np.ndarray, penalty: float, iterations: int = 50) -> np.ndarray:
    """L2-penalised logistic regression by Newton's method; returns [w..., b] (b unpenalised)."""
    design = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(design.shape[1])
    ridge = np.full(design.shape[1], penalty)
    ridge[-1] = 1e-6
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - y) + ridge * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return theta


class _Projection:
    """Centre and project onto the leading principal components of the training photos."""

    def __init__(self, unit: np.ndarray, components: int = COMPONENTS):
        self.mean = unit.mean(axis=0)
        _, singular, vt = np.linalg.svd(unit - self.mean, full_matrices=False)
        keep = min(components, int(np.sum(singular > 1e-9 * singular[0])))
        self.basis = vt[:keep].T / singular[:keep] * np.sqrt(len(unit))  # whitened: one penalty fits every axis

    def __call__(self, unit: np.ndarray) -> np.ndarray:
        return (unit - self.mean) @ self.basis

    def back(self, theta: np.ndarray) -> tuple[np.ndarray, float]:
        """Weights on the (centred, projected) space -> weights and bias on the unit embedding."""
        weights = self.basis @ theta[:-1]
        return weights, float(theta[-1] - self.mean @ weights)


def _folds(n: int, folds: int = FOLDS) -> list[np.ndarray]:
    return [np.arange(n)[i::folds] for i in range(folds)]


def _out_of_fold_logits(unit: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    logits = np.zeros(y.shape)
    for held in _folds(len(unit)):
        train = np.setdiff1d(np.arange(len(unit)), held)
        projection = _Projection(unit[train])
        for column in range(y.shape[1]):
            weights, bias = projection.back(_logistic(projection(unit[train]), y[train, column], penalty))
            logits[held, column] = unit[held] @ weights + bias
    return logits


def _log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, logits) - y * logits))


def fit_head(features: np.ndarray, y: np.ndarray, scored: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Fit the scene head on photos' ``features`` (N, D) and 0/1 targets ``y`` (N, words).

    Returns float32 weights (kept, D) and bias (kept,) on the unit-length embedding, the indices
    of the words kept (``scored``, default all, with enough positives), and a report (penalty,
    calibration, out-of-fold loss).
    """
    scored = np.ones(y.shape[1], bool) if scored is None else np.asarray(scored, bool)
    kept = np.flatnonzero((y.sum(axis=0) >= MIN_POSITIVES) & scored)
    unit, y = _unit(features), np.asarray(y, np.float64)[:, kept]
    losses = {penalty: _log_loss(_out_of_fold_logits(unit, y, penalty), y) for penalty in PENALTIES}
    penalty = min(losses, key=losses.get)
    logits = _out_of_fold_logits(unit, y, penalty)
    slope, intercept = _logistic(logits.reshape(-1, 1), y.reshape(-1), 1e-6)  # one Platt scaling for all tags
    projection = _Projection(unit)
    weights, bias = zip(*(projection.back(_logistic(projection(unit), y[:, c], penalty)) for c in range(y.shape[1])))
    weights = np.array(weights) * slope
    bias = np.array(bias) * slope + intercept
    report = {"penalty": penalty, "out_of_fold_log_loss": losses, "platt": (float(slope), float(intercept)),
              "photos": len(unit), "tags": len(kept)}
    return weights.astype(np.float32), bias.astype(np.float32), kept, report


def load_data(path: Path = DATA_FILE) -> tuple[np.ndarray, list[list[str]], list[str]]:
    """The shipped training data: embeddings (float32), each photo's words, and its key."""
    with np.load(path, allow_pickle=False) as data:
        features = data["features"].astype(np.float32)
        words = [str(w).split(";") if str(w) else [] for w in data["words"]]
        keys = [str(k) for k in data["keys"]]
    return features, words, keys


def save_data(path: Path, features: np.ndarray, words: list[list[str]], keys: list[str]) -> None:
    np.savez_compressed(path, features=np.asarray(features, np.float16), words=np.array([";".join(w) for w in words]),
                        keys=np.array(keys))


def with_scene_head(table: LabelTable, vocabulary: list[SceneWord], weights: np.ndarray, bias: np.ndarray,
                    kept: np.ndarray) -> LabelTable:
    """``table`` with this scene head (any it had replaced): new tags for the words it lacks, and
    a head row per kept word (a word the table already has, such as "person", is scored by both);
    and the photo properties of the vocabulary, scored from their signals."""
    table = table.without_scene_head()
    chosen = [vocabulary[i] for i in kept]
    by_word = {w.word: w for w in vocabulary}
    existing = set(table.ids)
    new = [w for w in chosen if w.wnid not in existing]

    def parent_id(word: SceneWord) -> str:
        above = word.parent
        while above and by_word[above].wnid not in existing and by_word[above] not in new:
            above = by_word[above].parent  # a parent without enough photos: skip to the next one up
        return by_word[above].wnid if above else ""

    scenes = [SceneTag(w.wnid, w.name, parent_id(w), w.synonyms) for w in new]
    measured = [t for t in table.scenes if t.signal]  # the table's photo properties stay...
    scenes += measured + [SceneTag(w.wnid, w.name, "", w.synonyms, w.signal)  # ...and the vocabulary's join them
                          for w in vocabulary if w.signal and w.wnid not in {t.id for t in measured}]
    return dataclasses.replace(table, scenes=scenes, head_ids=[w.wnid for w in chosen], head_weights=weights,
                               head_bias=bias)


def scene_head_table(table: LabelTable, data_file: Path = DATA_FILE) -> tuple[LabelTable, dict]:
    """The built-in table with its scene head, fitted from the shipped data."""
    vocabulary = read_vocabulary()
    features, words, _ = load_data(data_file)
    weights, bias, kept, report = fit_head(features, targets(words, vocabulary), [w.scored for w in vocabulary])
    return with_scene_head(table, vocabulary, weights, bias, kept), report
