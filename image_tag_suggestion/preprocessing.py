"""Decoded pixels -> the model's input tensor: resize, centre crop (or pad), normalise.

The one place that knows how a bundle wants its pixels; the numbers come from
the bundle's ``config.yaml`` (``encoder.preprocessing``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
FITS = ("crop", "pad")
PANORAMA_RATIO = 2.0
MAX_TILES = 4


@dataclass(frozen=True)
class Preprocessing:
    """How a bundle's encoder wants its input.

    Attributes:
        input_size: side of the square the encoder sees.
        resize: the short side is scaled to this before the centre crop.
        mean, std: per-channel ``(x - mean) / std`` on 0..255 RGB values.
        resample: ``bicubic`` or ``bilinear``.
        fit: ``crop`` (the short side scaled to ``resize``, the centre square kept) or ``pad``
            (the whole picture scaled to fit inside the square, centred on black: the original
            app's way, which its imported model expects).
    """

    input_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    resample: str = "bicubic"
    fit: str = "crop"

    @classmethod
    def from_config(cls, config: dict) -> "Preprocessing":
        allowed = set(cls.__dataclass_fields__)
        unknown = set(config) - allowed
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        values = dict(config)
        for key in ("mean", "std"):
            if key in values:
                value = values[key]
                values[key] = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * 3))
                if len(values[key]) != 3:
                    raise ValueError(f"preprocessing.{key} needs 1 or 3 numbers")
        preprocessing = cls(**values)
        if preprocessing.resample not in _RESAMPLING:
            raise ValueError(f"preprocessing.resample must be one of {sorted(_RESAMPLING)}")
        if preprocessing.fit not in FITS:
            raise ValueError(f"preprocessing.fit must be one of {FITS}")
        if not 0 < preprocessing.input_size <= preprocessing.resize:
            raise ValueError("preprocessing needs 0 < input_size <= resize")
        if min(preprocessing.std) <= 0:
            raise ValueError("preprocessing.std must be positive")
        return preprocessing

    def to_config(self) -> dict:
        config = {
            "input_size": self.input_size,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "resample": self.resample,
        }
        return config if self.fit == "crop" else {**config, "fit": self.fit}

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        """The ``input_size`` square the encoder sees (uint8): for ``fit="crop"``, the short side
        scaled to ``resize`` and the centre cut out; for ``fit="pad"``, see :meth:`pad`.

        Done as one resize of just the source region that survives the crop, which
        is the same picture for a fraction of the work.
        """
        if self.fit == "pad":
            return self.pad(pixels)
        image = Image.fromarray(pixels)
        width, height = image.size
        scale = self.resize / min(width, height)
        side = self.input_size / scale  # the crop's side in source pixels
        left, top = (width - side) / 2, (height - side) / 2
        box = (max(left, 0.0), max(top, 0.0), min(left + side, width), min(top + side, height))
        size = (self.input_size, self.input_size)
        return np.asarray(image.resize(size, _RESAMPLING[self.resample], box=box, reducing_gap=3.0), dtype=np.uint8)

    def pad(self, pixels: np.ndarray) -> np.ndarray:
        """The whole picture scaled so that its long side is ``input_size``, centred on black."""
        image = Image.fromarray(pixels)
        width, height = image.size
        scale = self.input_size / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = np.zeros((self.input_size, self.input_size, 3), np.uint8)
        top, left = (self.input_size - size[1]) // 2, (self.input_size - size[0]) // 2
        canvas[top : top + size[1], left : left + size[0]] = np.asarray(
            image.resize(size, _RESAMPLING[self.resample]), dtype=np.uint8)
        return canvas

    def tiles(self, pixels: np.ndarray) -> np.ndarray:
        """The crops one image is seen through, (k, S, S, 3) uint8: the centre crop, or for a
        panorama (a side more than PANORAMA_RATIO times the other) up to MAX_TILES squares
        spread along it, first to last, so the whole picture counts and not its middle only.
        The encoder's outputs for them are averaged (``ImagePredictor.encode``)."""
        height, width = pixels.shape[:2]
        short, long = min(height, width), max(height, width)
        if long <= PANORAMA_RATIO * short or self.fit == "pad":  # padding already shows all of it
            return self.crop(pixels)[None]
        count = min(MAX_TILES, int(np.ceil(long / short)))
        starts = np.linspace(0, long - short, count).round().astype(int)
        if width >= height:
            return np.stack([self.crop(np.ascontiguousarray(pixels[:, s : s + short])) for s in starts])
        return np.stack([self.crop(pixels[s : s + short]) for s in starts])

    def normalise(self, crops: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 crops (N, S, S, 3) -> float32 model input, ``(x - mean) / std`` per channel,
        written into ``out`` when given (e.g. the encoder's own input tensor).

        Done as a lookup of the 256 possible values, one pass and no temporaries; the table
        holds exactly what ``(float32(x) - mean) * (1 / std)`` gives, so the result is too."""
        if out is None:
            out = np.empty(crops.shape, np.float32)
        table = self._table()
        if table.ndim == 1:  # the same mean and std for every channel: one table
            np.take(table, crops, out=out)
        else:
            for channel in range(3):
                np.take(table[channel], crops[..., channel], out=out[..., channel])
        return out

    def _table(self) -> np.ndarray:
        table = self.__dict__.get("_lookup")
        if table is None:
            mean = np.asarray(self.mean, dtype=np.float32)
            scale = 1.0 / np.asarray(self.std, dtype=np.float32)
            table = (np.arange(256, dtype=np.float32)[:, None] - mean) * scale  # (256, 3)
            table = np.ascontiguousarray(table[:, 0] if len(set(self.mean)) == 1 and len(set(self.std)) == 1 else table.T)
            object.__setattr__(self, "_lookup", table)  # a cache on a frozen dataclass
        return table

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """One decoded image -> one float32 input of shape (S, S, 3)."""
        return self.normalise(self.crop(pixels)[None])[0]
