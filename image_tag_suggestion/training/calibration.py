"""Turn cosine similarities into probabilities: ``sigmoid(scale * cos + offset)`` fitted
on a validation split (Platt scaling), so a score of 0.5 means roughly even odds."""

from __future__ import annotations

import numpy as np


def fit_platt(similarities: np.ndarray, targets: np.ndarray, l2: float = 1e-3, iterations: int = 100) -> tuple[float, float]:
    """Logistic regression with one feature, by Newton's method; returns (scale, offset).

    A small L2 penalty keeps the fit finite when the two classes separate perfectly.
    """
    x = np.asarray(similarities, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    if x.size == 0 or y.min() == y.max():
        raise ValueError("calibration needs both positive and negative pairs")
    design = np.stack([x, np.ones_like(x)], axis=1)
    weights = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-design @ weights))
        gradient = design.T @ (p - y) + l2 * weights * len(x)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + l2 * len(x) * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(weights[0]), float(weights[1])


#: The weakest slope a bundle gets. A calibration may say how sure a similarity is but
#: never reverse the embedding's ranking; a slope <= 0 fitted on a few validation photos
#: is noise, so the slope is raised to this and only the offset is fitted.
MIN_SCALE = 1.0


def fit_offset(similarities: np.ndarray, targets: np.ndarray, scale: float, iterations: int = 100) -> float:
    """The offset of a logistic calibration whose slope is fixed to ``scale`` (Newton's method)."""
    x = scale * np.asarray(similarities, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    offset = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x + offset)))
        step = (p - y).sum() / max((p * (1 - p)).sum(), 1e-12)
        offset -= step
        if abs(step) < 1e-9:
            break
    return float(offset)


def calibration_pairs(similarities: np.ndarray, positive: np.ndarray, verified: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (similarity, target) pairs to fit on: every verified image-label pair."""
    return similarities[verified], positive[verified].astype(np.float64)
