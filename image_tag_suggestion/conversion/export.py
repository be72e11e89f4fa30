"""Keras encoder -> ``.tflite`` for serving on LiteRT (needs TensorFlow)."""

from __future__ import annotations

from pathlib import Path


def export_tflite(model, path: str | Path, float16: bool = True) -> Path:
    """Convert ``model`` (images -> embeddings) with a free batch dimension.

    ``float16`` stores weights at half precision (half the file); LiteRT's
    XNNPACK delegate computes in float32 either way.
    """
    import contextlib
    import sys

    import tensorflow as tf

    # from_keras_model freezes Keras 3 variables into constants (a tf.function
    # traced by hand keeps them as resource inputs and loses the weights).
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # the converter prints; keep stdout for results
        flatbuffer = converter.convert()
    path.write_bytes(flatbuffer)
    return path
