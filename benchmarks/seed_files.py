"""The original app's model files, written here the way its code wrote them, for the import's
tests and benchmark: Keras 2 (``tf-keras``), a MobileNetV2 without its top, a pooled (2,560
values at full width) or projected (Dense 50) head, a ``Lambda`` holding ``K.l2_normalize``,
saved as legacy ``.h5``; and the seed's own preprocessing and score, written out on their own.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 224
K = None  # Keras 2's backend, set by seed_model: the seed's Lambda names it as a global


def seed_model(variant: str, alpha: float = 0.35, extra_layer=None, seed: int = 0):
    """The seed's embedding model in Keras 2 with random weights (``extra_layer``: one more
    layer after the backbone, to test refusals)."""
    global K
    import tf_keras as k2
    from tf_keras import backend as K

    k2.utils.set_random_seed(seed)
    base = k2.applications.MobileNetV2(include_top=False, weights=None, input_shape=(None, None, 3), alpha=alpha)
    x = k2.layers.Dropout(0.5)(base.output)
    if extra_layer is not None:
        x = extra_layer(x)
    if variant == "pooled":
        x = k2.layers.Concatenate(axis=-1)([k2.layers.GlobalMaxPooling2D()(x), k2.layers.GlobalAveragePooling2D()(x)])
    elif variant == "projected":
        x = k2.layers.Dense(50)(k2.layers.GlobalAveragePooling2D()(x))
    else:
        raise ValueError(f"variant is pooled or projected, not {variant!r}")
    x = k2.layers.Lambda(lambda t: K.l2_normalize(t, axis=-1))(x)
    return k2.models.Model(base.input, x)


def set_statistics_from(model, batch: np.ndarray) -> None:
    """Batch-norm moving statistics from real photos, so features have a trained model's scale."""
    import tf_keras as k2

    for layer in model.layers:
        if isinstance(layer, k2.layers.BatchNormalization):
            layer.momentum = 0.0
    model(batch, training=True)


def seed_input(image: Image.Image | str) -> np.ndarray:
    """The seed's preprocessing: the whole picture fitted inside 224x224, centred on black,
    then MobileNetV2's ``x / 127.5 - 1``."""
    image = (Image.open(image) if not isinstance(image, Image.Image) else image).convert("RGB")
    scale = SIDE / max(image.size)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                           Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (SIDE, SIDE))
    canvas.paste(resized, ((SIDE - resized.width) // 2, (SIDE - resized.height) // 2))
    return np.asarray(canvas, np.float32) / 127.5 - 1.0


def seed_scores(embedding: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The seed's score of every label: ``1 - ||e - l||^2 / 4``."""
    return 1.0 - np.sum((embedding[None] - table) ** 2, axis=1) / 4.0
