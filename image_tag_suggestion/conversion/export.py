"""Keras encoder -> ``.tflite`` for serving on LiteRT (needs TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def export_tflite(model, path: str | Path, float16: bool = True, representative: np.ndarray | None = None) -> Path:
    """Convert ``model`` (images -> embeddings) with a free batch dimension.

    ``float16`` stores weights at half precision (half the file); LiteRT's XNNPACK delegate
    computes in float32 either way. ``representative`` (model inputs, N x S x S x 3, a few
    hundred real photos) asks for full-integer quantisation instead: int8 weights per channel
    and int8 activations, their ranges measured on those inputs; input and output stay
    float32, so the encoder is used the same way.
    """
    import contextlib
    import sys

    import tensorflow as tf

    # from_keras_model freezes Keras 3 variables into constants (a tf.function
    # traced by hand keeps them as resource inputs and loses the weights).
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.asarray(image[None], np.float32)] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # the converter prints; keep stdout for results
        flatbuffer = converter.convert()
    path.write_bytes(flatbuffer)
    return path
