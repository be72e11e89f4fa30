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
from .faces import NO_FACES, SIGNALS, letterbox_uint8, signals
from .images import DEFAULT_MAX_PIXELS, MIN_SIDE, ImageSource, load_image
from .properties import measure
from .scoring import Scorer, Tag


class Prepared(NamedTuple):
    """One decoded image made ready for the models: the encoder's crops (one, or a few along a
    panorama), the face detector's letterboxed input (``faces.letterbox_uint8``) when the bundle
    has a detector, and the photo properties the bundle measures (``properties.py``).
    All small (150 kB a crop, 110 kB a letterbox): the decoded pixels are no longer needed."""

    crops: np.ndarray
    faces: tuple | None = None
    properties: np.ndarray | None = None


class ImagePredictor:
    """Turns images into embeddings with a bundle's encoder.

    With a face detector in the bundle, each embedding ends with the face signals of
    ``faces.py``, then with the photo properties the bundle measures (``properties.py``);
    ``embedding_dim`` counts them, ``visual_dim`` is the encoder's part. The steps of
    :meth:`encode`, each a method of its own: :meth:`embed_crops` (the encoder),
    :meth:`looks_for_faces` (whether a photo is worth the face detector, from its embedding:
    ``faces.PersonGate``), :meth:`find_people` (the detector) and :meth:`join`.
    """

    def __init__(self, bundle: Bundle, num_threads: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.bundle = bundle
        self.preprocessing = bundle.preprocessing
        self.encoder = bundle.load_encoder(num_threads=num_threads)
        self.face_detector = bundle.load_face_detector(num_threads=num_threads)
        self.person_gate = bundle.load_person_gate()
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
        """The per-image work before the models run (cheap, thread-safe: ``tag_files`` does it in its
        worker threads, right after decoding)."""
        return Prepared(self.preprocessing.tiles(pixels), letterbox_uint8(pixels) if self.face_detector else None,
                        properties=measure(pixels, self.property_signals) if self.property_signals else None)

    def encode(self, prepared: Sequence[Prepared], concurrent: bool = False) -> np.ndarray:
        """Embed prepared images: the crops of all of them through the encoder, then the faces of
        those worth looking at through the detector, both in fixed-size batches (thread-safe;
        ``concurrent``: the encoder on a runner of the call's own with half the threads, for
        callers that run two at once, see ``encoder.TfliteEncoder``)."""
        visual = self.embed_crops(prepared, concurrent)
        look = np.flatnonzero(self.looks_for_faces(visual))
        people = self.find_people([prepared[i] for i in look], concurrent=True)
        return self.join(visual, dict(zip(look, people)), prepared)

    def embed_crops(self, prepared: Sequence[Prepared], concurrent: bool = False) -> np.ndarray:
        """The encoder's part of the embeddings, (N, visual_dim): all crops in fixed-size batches,
        a panorama's crops averaged."""
        if len(prepared) == 0:
            return np.zeros((0, self.visual_dim), np.float32)
        crops = prepared[0].crops if len(prepared) == 1 else np.concatenate([p.crops for p in prepared])
        outputs = self.encoder.encode_crops(crops, self.preprocessing.normalise, concurrent)
        if len(outputs) == len(prepared):  # no panoramas: one crop each
            return outputs
        ends = np.cumsum([len(p.crops) for p in prepared])
        return np.stack([part.mean(axis=0) for part in np.split(outputs, ends[:-1])])

    def looks_for_faces(self, visual: np.ndarray) -> np.ndarray:
        """(N,) bool from :meth:`embed_crops`' output: which photos go through the face detector
        (all without a gate, none without a detector)."""
        if self.face_detector is None:
            return np.zeros(len(visual), bool)
        if self.person_gate is None:
            return np.ones(len(visual), bool)
        return self.person_gate(visual)

    def find_people(self, prepared: Sequence[Prepared], concurrent: bool = False) -> list[np.ndarray]:
        """The face signals of each prepared image, from one detector call a batch (thread-safe;
        ``concurrent``: on a single-threaded runner of the call's own, see ``faces.FaceDetector``)."""
        found = self.face_detector.detect_batch([p.faces for p in prepared], concurrent=concurrent) if prepared else []
        return [signals(faces) for faces in found]

    def join(self, visual: np.ndarray, people: dict[int, np.ndarray], prepared: Sequence[Prepared]) -> np.ndarray:
        """The whole embeddings: the encoder's part, the face signals (``people``: by row, those
        looked for; the others have none) and the photo properties."""
        parts = [visual]
        if self.face_detector is not None:
            parts.append(np.stack([people.get(i, NO_FACES) for i in range(len(visual))]) if len(visual)
                         else np.zeros((0, len(SIGNALS)), np.float32))
        if self.property_signals:
            parts.append(np.stack([p.properties for p in prepared]) if len(prepared)
                         else np.zeros((0, len(self.property_signals)), np.float32))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else visual

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
