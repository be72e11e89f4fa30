"""Decoded pixels -> photo properties that need no model: whether a photo has any colour.

A black-and-white photo is one whose pixels are all shades of grey: red, green and blue equal,
up to the noise a JPEG adds. Its *colour* signal is the 99th percentile over the photo of
``max(R, G, B) - min(R, G, B)`` (0 to 1), measured on about 100 pixels a side: 0 for a grey
file, under 0.02 for a grey photo saved as colour JPEG; the first per cent is let off so that
a speck of colour (a stamp, a caption) does not count, while a black cat with green eyes does.
Toned prints (sepia, cyanotype) are one colour, not grey, and are not called black and white.

A bundle lists the signals it measures under ``properties`` in config.yaml; they follow the
encoder's embedding (and the face signals) at the end of each embedding, in :data:`SIGNALS`
order, and ``scoring.py`` turns each into its tag's score with :func:`score`.
"""

from __future__ import annotations

import numpy as np

SIGNALS = ("colour",)
SAMPLE_SIDE = 96  # pixels measured along the long side
GREY_UP_TO = 7.5 / 255  # colour at which "black and white" scores 0.5 (JPEG grey measures up to 7)
GREY_SOFTNESS = 1 / 255  # how fast the score falls past it (a logistic's scale)


def measure(pixels: np.ndarray, signals: tuple[str, ...] = SIGNALS) -> np.ndarray:
    """The ``signals`` of one decoded RGB uint8 image (H, W, 3), float32."""
    unknown = set(signals) - set(SIGNALS)
    if unknown:
        raise ValueError(f"unknown photo properties {sorted(unknown)}; known: {SIGNALS}")
    step = max(1, max(pixels.shape[:2]) // SAMPLE_SIDE)
    red, green, blue = (pixels[::step, ::step, channel] for channel in range(3))
    chroma = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)  # uint8, >= 0
    at_or_below = np.cumsum(np.bincount(chroma.ravel(), minlength=256))
    values = {"colour": float(np.searchsorted(at_or_below, 0.99 * chroma.size)) / 255.0}  # 99th percentile
    return np.array([values[name] for name in signals], np.float32)


def score(signal: str, values: np.ndarray) -> np.ndarray:
    """The probability-like score of the tag a signal stands for ("colour": black and white)."""
    if signal != "colour":
        raise ValueError(f"unknown photo property {signal!r}")
    exponent = np.clip((np.asarray(values, np.float32) - GREY_UP_TO) / GREY_SOFTNESS, -50.0, 50.0)
    return (1.0 / (1.0 + np.exp(exponent))).astype(np.float32)
