"""A Keras callback for training tests: the trainable weights before and after ``fit``.

An epoch's mean triplet loss on a few dozen synthetic images is too noisy to say whether
training ran (a model that is not trained at all can score lower in one epoch than a trained
one in another); weights moved by the optimiser cannot be mistaken.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def record_weights_callback(path: str | Path):
    """A callback that saves ``before_i`` and ``after_i`` for every trainable weight to ``path``."""
    import keras

    class RecordWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.before = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]

        def on_train_end(self, logs=None):
            after = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]
            np.savez(path, **{f"before_{i}": w for i, w in enumerate(self.before)},
                     **{f"after_{i}": w for i, w in enumerate(after)})

    return RecordWeights()


def load_weights(path: str | Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(before, after) as saved by :func:`record_weights_callback`."""
    saved = np.load(path)
    count = sum(name.startswith("after_") for name in saved.files)
    return [saved[f"before_{i}"] for i in range(count)], [saved[f"after_{i}"] for i in range(count)]


def share_moved(path: str | Path) -> float:
    """The share of trainable weight tensors that training changed."""
    before, after = load_weights(path)
    return float(np.mean([not np.array_equal(b, a) for b, a in zip(before, after)]))
