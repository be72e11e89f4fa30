"""The seed's two-object API: ``ImagePredictor`` (image -> embedding) and
``LabelPredictor`` (embedding -> ranked tags), both built from a bundle.

    image_predictor = ImagePredictor.init_from_config_path(DEFAULT_CONFIG)
    label_predictor = LabelPredictor.init_from_config_path(DEFAULT_CONFIG)
    pred, arr = image_predictor.predict_from_file("cat.jpg")
    label_predictor.predict_dataframe_from_array(pred)   # columns label, scores
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .bundle import DEFAULT_CONFIG, Bundle, load_bundle
from .images import DEFAULT_MAX_PIXELS, ImageSource, load_image
from .scoring import Scorer, Tag


class ImagePredictor:
    """Turns images into embeddings with a bundle's encoder."""

    def __init__(self, bundle: Bundle, num_threads: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.bundle = bundle
        self.preprocessing = bundle.preprocessing
        self.encoder = bundle.load_encoder(num_threads=num_threads)
        self.max_pixels = max_pixels

    @classmethod
    def init_from_config_path(cls, config_path: str | Path = DEFAULT_CONFIG, **kwargs) -> "ImagePredictor":
        return cls(load_bundle(config_path), **kwargs)

    @classmethod
    def init_from_config_url(cls, config_url: str, cache_dir: str | Path | None = None, **kwargs) -> "ImagePredictor":
        return cls(load_bundle(config_url, cache_dir=cache_dir), **kwargs)

    @property
    def embedding_dim(self) -> int:
        return self.encoder.dim

    def load(self, source: ImageSource, min_size: int | None = None) -> np.ndarray:
        """Decode an image at the smallest size the model can use, or ``min_size`` if larger (see ``load_image``)."""
        return load_image(source, min_size=max(min_size or 0, self.preprocessing.resize), max_pixels=self.max_pixels)

    def predict_from_file(self, file: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        """Embed one image; returns ``(embedding (D,), upright RGB array)``."""
        pixels = self.load(file)
        return self.predict_from_array(pixels), pixels

    def predict_from_array(self, pixels: np.ndarray) -> np.ndarray:
        """Embed one decoded RGB uint8 array (H, W, 3)."""
        return self.predict_from_arrays([pixels])[0]

    def predict_from_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed decoded images in one encoder call; returns (N, D)."""
        if len(images) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        return self.encode_crops(np.stack([self.preprocessing.crop(image) for image in images]))

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """Embed already cropped uint8 images (N, S, S, 3)."""
        return self.encoder.encode(self.preprocessing.normalise(crops))

    def predict_from_files(self, files: Iterable[ImageSource]) -> np.ndarray:
        """Embed many images (errors raise; see ``tagging.tag_files`` for a forgiving batch run)."""
        return self.predict_from_arrays([self.load(f) for f in files])


class LabelPredictor:
    """Ranks a bundle's tags against image embeddings."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.labels = bundle.load_labels()
        self.scorer = Scorer(self.labels, bundle.scoring)
        self.default_order = bundle.ranking_order

    @classmethod
    def init_from_config_path(cls, config_path: str | Path = DEFAULT_CONFIG) -> "LabelPredictor":
        return cls(load_bundle(config_path))

    @classmethod
    def init_from_config_url(cls, config_url: str, cache_dir: str | Path | None = None) -> "LabelPredictor":
        return cls(load_bundle(config_url, cache_dir=cache_dir))

    def scores(self, preds: np.ndarray) -> np.ndarray:
        """All tag scores, (N, n_tags), in ``self.labels.ids`` order."""
        return self.scorer.scores(preds)

    def predict_from_array(
        self,
        pred: np.ndarray,
        top_k: int | None = 20,
        min_score: float = 0.0,
        include_broader: bool = True,
        order: str | None = None,
    ) -> list[Tag]:
        """The best tags for one embedding, best first."""
        return self.predict_batch(np.asarray(pred)[None], top_k, min_score, include_broader, order)[0]

    def predict_batch(
        self,
        preds: np.ndarray,
        top_k: int | None = 20,
        min_score: float = 0.0,
        include_broader: bool = True,
        order: str | None = None,
    ) -> list[list[Tag]]:
        """The best tags for each row of ``preds`` (N, D)."""
        scores = self.scorer.scores(preds)
        order = order or self.default_order
        return [self.scorer.rank(row, top_k, min_score, include_broader, order) for row in scores]

    def predict_dataframe_from_array(self, pred: np.ndarray, top_k: int | None = 20, **kwargs):
        """The seed's call: a DataFrame with columns ``label`` and ``scores``, best first."""
        import pandas as pd  # imported here: the CLI's cold start does not pay for pandas

        tags = self.predict_from_array(pred, top_k=top_k, **kwargs)
        return pd.DataFrame({"label": [t.label for t in tags], "scores": [t.score for t in tags]})
