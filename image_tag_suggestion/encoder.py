"""Model input -> image embedding, with the bundle's ``.tflite`` encoder on LiteRT.

Serving never imports TensorFlow: LiteRT is a 22 MB runtime and its XNNPACK
kernels are fast on a plain CPU (a MobileNetV2 runs in about 3 ms an image on
2 threads here, against about 220 ms for an eager Keras call).

Interpreters here are sized once and never resized: :class:`FixedBatch` keeps one
interpreter for single images and one for batches of ``batch_size``, each allocated on
first use; a batch that is not full is padded, never resized to (resizing re-plans the
graph and re-allocates its tensor arena: 40 ms a time, and an arena as large as the
largest batch ever seen). Inputs are written straight into the interpreter's input
tensor, so a batch's pixels are converted to float32 once, in place.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np

#: Images per encoder call on all cores (a tagging batch with panoramas is several calls).
DEFAULT_BATCH = 8
#: Images per call of a runner for ``concurrent=True`` calls. Measured here on one thread:
#: batches of 2 took 11.1 ms an image, of 1 12.4 ms, of 8 16.7 ms (the larger batch's
#: activations no longer fit in the cache), and the arena of a batch of 2 is half a batch of 8's.
CONCURRENT_BATCH = 2


def default_num_threads() -> int:
    """All the cores this process may use (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class FixedBatch:
    """One ``.tflite`` model run at two fixed batch sizes, 1 and ``batch_size``, on ``num_threads``.

    ``run(count, fill)`` runs ``count`` images: ``fill(view, start, stop)`` writes images
    ``start:stop`` into ``view`` (the input tensor, ``(batch, ...)`` float32, rows past the last image
    already zero). Returns each output for the ``count`` images, in the model's output order.
    One image goes through the batch-1 interpreter (no padding for the app or one photo);
    more go through the ``batch_size`` one in full batches, the last padded with zeros
    (rows of a batch are computed independently, so padding changes no other row).
    Thread-safe: runs are serialised.
    """

    def __init__(self, path: Path, num_threads: int, batch_size: int):
        from ai_edge_litert.interpreter import Interpreter

        self._make = lambda: Interpreter(model_path=str(path), num_threads=num_threads)
        self.batch_size = max(1, int(batch_size))
        self._spare = self._make()  # loaded now so that a bad file fails early; sized on first use
        self._details = self._spare.get_input_details(), self._spare.get_output_details()
        self._interpreters: dict[int, object] = {}  # batch size -> interpreter, allocated once
        self.allocations = 0  # arenas planned: one per interpreter
        self.invocations = 0
        self._lock = threading.Lock()

    def details(self) -> tuple[list[dict], list[dict]]:
        return self._details

    def _interpreter(self, size: int):
        interpreter = self._interpreters.get(size)
        if interpreter is None:
            spare, self._spare = self._spare, None
            interpreter = spare if spare is not None else self._make()
            shape = list(self._details[0][0]["shape"])
            if shape[0] != size:  # before the first allocation: nothing to re-plan yet
                interpreter.resize_tensor_input(self._details[0][0]["index"], [size, *shape[1:]])
            interpreter.allocate_tensors()
            self.allocations += 1
            self._interpreters[size] = interpreter
        return interpreter

    def run(self, count: int, fill: Callable[[np.ndarray, int, int], None], outputs: list[int]) -> list[np.ndarray]:
        size = 1 if count == 1 else self.batch_size
        results: list[list[np.ndarray]] = [[] for _ in outputs]
        with self._lock:
            interpreter = self._interpreter(size)
            input_index = self._details[0][0]["index"]
            for start in range(0, count, size):
                stop = min(start + size, count)
                view = interpreter.tensor(input_index)()
                fill(view, start, stop)
                if stop - start < size:
                    view[stop - start :] = 0
                del view  # LiteRT refuses to run while a view of its buffers is alive
                interpreter.invoke()
                self.invocations += 1
                for result, output in zip(results, outputs):
                    # Outputs are (batch, ...) or, for models that flatten the batch, (1, batch * n, ...).
                    value = interpreter.get_tensor(output)
                    rows = value.reshape(size, -1, *value.shape[2:]) if value.shape[0] != size else value
                    result.append(rows[: stop - start].copy())
        return [np.concatenate(parts) for parts in results]


class RunnerPool:
    """Runners of one model (see :class:`FixedBatch`) on ``num_threads`` threads each, one for each
    caller running at the same time: made as callers need them, then reused (thread-safe).

    Two batches run side by side on half the cores each keep every core busy with less waiting
    than one run on all of them: XNNPACK's threads spin while they wait for each other, and on
    two cores a single-threaded run does not wait at all.
    """

    def __init__(self, path: Path, batch_size: int, num_threads: int = 1, first: FixedBatch | None = None):
        self._make = lambda: FixedBatch(path, num_threads, batch_size)
        self.runners: list[FixedBatch] = [first] if first is not None else []
        self._idle = list(self.runners)
        self._lock = threading.Lock()

    def run(self, count: int, fill: Callable[[np.ndarray, int, int], None], outputs: list[int]) -> list[np.ndarray]:
        """:meth:`FixedBatch.run` on a runner no other caller is using."""
        with self._lock:
            runner = self._idle.pop() if self._idle else None
        if runner is None:
            runner = self._make()
            with self._lock:
                self.runners.append(runner)
        try:
            return runner.run(count, fill, outputs)
        finally:
            with self._lock:
                self._idle.append(runner)


class TfliteEncoder:
    """Runs a ``.tflite`` model from (N, S, S, 3) images to (N, D) float32 embeddings.

    Images are run ``batch_size`` at a time (see :class:`FixedBatch`). A call on its own (one
    photo in the app, ``predict_from_file``) runs on ``num_threads`` threads, the shortest wait
    for one result; calls made ``concurrent=True`` (``tag_files``' batches, two at a time in its
    worker threads) each take a runner of their own on half the threads (:class:`RunnerPool`;
    on two cores, one thread each), which spends less CPU per image than one run on all cores.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None, batch_size: int = DEFAULT_BATCH):
        self.path = Path(path)
        self.num_threads = num_threads or default_num_threads()
        try:
            self._runner = FixedBatch(self.path, self.num_threads, batch_size)
            self._concurrent = RunnerPool(self.path, min(batch_size, CONCURRENT_BATCH), max(1, self.num_threads // 2))
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.path}: not a usable .tflite model ({exc})") from None
        inputs, outputs = self._runner.details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path}: an encoder needs one input and one output")
        self._output = outputs[0]["index"]
        shape = inputs[0]["shape_signature"]
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise ValueError(f"{self.path}: input shape {list(shape)} is not (batch, size, size, 3)")
        self.input_size = int(shape[1])
        self.dim = int(outputs[0]["shape_signature"][-1])

    @property
    def batch_size(self) -> int:
        return self._runner.batch_size

    @property
    def runners(self) -> list[FixedBatch]:
        """Every runner made so far: the shared one, then those of ``concurrent=True`` calls."""
        return [self._runner, *self._concurrent.runners]

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch of preprocessed float32 images; returns float32 (N, D)."""
        images = np.asarray(images)
        self._check(images)

        def fill(view, start, stop):
            view[: stop - start] = images[start:stop]

        return self._encode(len(images), fill)

    def encode_crops(self, crops: np.ndarray, normalise: Callable[..., np.ndarray],
                     concurrent: bool = False) -> np.ndarray:
        """Embed uint8 crops (N, S, S, 3): ``normalise(crops, out=...)`` writes each batch's model
        input straight into the interpreter (no float32 copy of the batch is ever made).
        ``concurrent``: on a runner of the call's own with half the threads (see the class)."""
        self._check(crops)

        def fill(view, start, stop):
            normalise(crops[start:stop], out=view[: stop - start])

        return self._encode(len(crops), fill, concurrent)

    def _check(self, images: np.ndarray) -> None:
        if images.ndim != 4 or images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected (N, {self.input_size}, {self.input_size}, 3), got {images.shape}")

    def _encode(self, count: int, fill, concurrent: bool = False) -> np.ndarray:
        if count == 0:
            return np.zeros((0, self.dim), np.float32)
        runner = self._concurrent if concurrent else self._runner
        return runner.run(count, fill, [self._output])[0].astype(np.float32, copy=False)
