"""The seed's two-object API: ``ImagePredictor`` (image -> embedding) and
``LabelPredictor`` (embedding -> ranked tags), both built from a bundle.

    image_predictor = ImagePredictor.init_from_config_path(DEFAULT_CONFIG)
    label_predictor = LabelPredictor.init_from_config_path(DEFAULT_CONFIG)
    pred, arr = image_predictor.predict_from_file("cat.jpg")
    label_predictor.predict_dataframe_from_array(pred)   # columns label, scores
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from .bundle import DEFAULT_CONFIG, Bundle, load_bundle
from .faces import SIGNALS, letterbox_uint8, signals
from .images import DEFAULT_MAX_PIXELS, MIN_SIDE, ImageSource, load_image
from .properties import measure
from .scoring import Scorer, Tag


class Prepared(NamedTuple):
    """One decoded image made ready for the models: the encoder's crops (one, or a few
    along a panorama) and, when the bundle has a face detector, either its letterboxed input
    or, once the detector has run (in a decode thread: ``tagging.tag_files``), its face signals;
    and the photo properties the bundle measures (``properties.py``).
    All small (150 kB a crop, 110 kB a letterbox): the decoded pixels are no longer needed."""

    crops: np.ndarray
    faces: tuple | None = None
    people: np.ndarray | None = None
    properties: np.ndarray | None = None


class ImagePredictor:
    """Turns images into embeddings with a bundle's encoder.

    With a face detector in the bundle, each embedding ends with the face signals of
    ``faces.py``, then with the photo properties the bundle measures (``properties.py``);
    ``embedding_dim`` counts them, ``visual_dim`` is the encoder's part.
    """

    def __init__(self, bundle: Bundle, num_threads: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.bundle = bundle
        self.preprocessing = bundle.preprocessing
        self.encoder = bundle.load_encoder(num_threads=num_threads)
        self.face_detector = bundle.load_face_detector(num_threads=num_threads)
        self.property_signals = bundle.property_signals
        self.max_pixels = max_pixels

    @classmethod
    def init_from_config_path(cls, config_path: str | Path = DEFAULT_CONFIG, **kwargs) -> "ImagePredictor":
        return cls(load_bundle(config_path), **kwargs)

    @classmethod
    def init_from_config_url(cls, config_url: str, cache_dir: str | Path | None = None, **kwargs) -> "ImagePredictor":
        return cls(load_bundle(config_url, cache_dir=cache_dir), **kwargs)

    @property
    def visual_dim(self) -> int:
        """The encoder's dimensions: what similarity between photos compares."""
        return self.encoder.dim

    @property
    def embedding_dim(self) -> int:
        return self.encoder.dim + (len(SIGNALS) if self.face_detector else 0) + len(self.property_signals)

    def load(self, source: ImageSource, min_size: int | None = None) -> np.ndarray:
        """Decode an image at the smallest size the model can use, or ``min_size`` if larger (see ``load_image``);
        a picture too small to tag (under MIN_SIDE pixels on its short side) is an ImageError."""
        return load_image(source, min_size=max(min_size or 0, self.preprocessing.resize), max_pixels=self.max_pixels,
                          min_side=MIN_SIDE)

    def predict_from_file(self, file: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        """Embed one image; returns ``(embedding (D,), upright RGB array)``."""
        pixels = self.load(file)
        return self.predict_from_array(pixels), pixels

    def predict_from_array(self, pixels: np.ndarray) -> np.ndarray:
        """Embed one decoded RGB uint8 array (H, W, 3)."""
        return self.predict_from_arrays([pixels])[0]

    def predict_from_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed decoded images in one encoder call; returns (N, D)."""
        return self.encode([self.prepare(image) for image in images])

    def prepare(self, pixels: np.ndarray) -> Prepared:
        """The per-image work before the models run (cheap, thread-safe: done in decode threads)."""
        return Prepared(self.preprocessing.tiles(pixels), letterbox_uint8(pixels) if self.face_detector else None,
                        properties=measure(pixels, self.property_signals) if self.property_signals else None)

    def encode(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Embed prepared images: the crops of all of them through the encoder in fixed-size
        batches (a panorama's crops averaged), and the faces not found yet through the detector
        likewise."""
        if len(prepared) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        crops = prepared[0].crops if len(prepared) == 1 else np.concatenate([p.crops for p in prepared])
        outputs = self.encoder.encode_crops(crops, self.preprocessing.normalise)
        if len(outputs) == len(prepared):  # no panoramas: one crop each
            embeddings = outputs
        else:
            ends = np.cumsum([len(p.crops) for p in prepared])
            embeddings = np.stack([part.mean(axis=0) for part in np.split(outputs, ends[:-1])])
        parts = [embeddings]
        if self.face_detector is not None:
            todo = [i for i, p in enumerate(prepared) if p.people is None]
            found = dict(zip(todo, self.face_detector.detect_batch([prepared[i].faces for i in todo], concurrent=True)))
            parts.append(np.stack([signals(found[i]) if i in found else p.people for i, p in enumerate(prepared)]))
        if self.property_signals:
            parts.append(np.stack([p.properties for p in prepared]))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else embeddings

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
        self.default_min_score = bundle.min_score

    @classmethod
    def init_from_config_path(cls, config_path: str | Path = DEFAULT_CONFIG) -> "LabelPredictor":
        return cls(load_bundle(config_path))

    @classmethod
    def init_from_config_url(cls, config_url: str, cache_dir: str | Path | None = None) -> "LabelPredictor":
        return cls(load_bundle(config_url, cache_dir=cache_dir))

    def scores(self, preds: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """All tag scores, (N, n_tags), in ``self.labels.ids`` order (``calibrated=False``: the model's own)."""
        return self.scorer.scores(preds, calibrated)

    def predict_from_array(
        self,
        pred: np.ndarray,
        top_k: int | None = 20,
        min_score: float | None = None,
        include_broader: bool = True,
        order: str | None = None,
    ) -> list[Tag]:
        """The best tags for one embedding, best first; ``min_score`` None: the bundle's "likely" cut-off."""
        return self.predict_batch(np.asarray(pred)[None], top_k, min_score, include_broader, order)[0]

    def predict_batch(
        self,
        preds: np.ndarray,
        top_k: int | None = 20,
        min_score: float | None = None,
        include_broader: bool = True,
        order: str | None = None,
    ) -> list[list[Tag]]:
        """The best tags for each row of ``preds`` (N, D); ``min_score`` None: the bundle's cut-off."""
        scores = self.scorer.scores(preds)
        order = order or self.default_order
        min_score = self.default_min_score if min_score is None else min_score
        return [self.scorer.rank(row, top_k, min_score, include_broader, order) for row in scores]

    def predict_dataframe_from_array(self, pred: np.ndarray, top_k: int | None = 20, min_score: float = 0.0, **kwargs):
        """The seed's call: a DataFrame with columns ``label`` and ``scores``, best first, ``top_k``
        rows whatever their scores (the seed draws its chart from them), and ``likely``: whether
        the score reaches the bundle's cut-off, i.e. whether the tag is shown by default."""
        import pandas as pd  # imported here: the CLI's cold start does not pay for pandas

        tags = self.predict_from_array(pred, top_k=top_k, min_score=min_score, **kwargs)
        return pd.DataFrame({"label": [t.label for t in tags], "scores": [t.score for t in tags],
                             "likely": [t.score >= self.default_min_score for t in tags]})
