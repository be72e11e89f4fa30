"""The original app's model files, written here the way its code wrote them, for the import's
tests and benchmark: Keras 2 (``tf-keras``), a MobileNetV2 without its top, a pooled (2,560
values at full width) or projected (Dense 50) head, a ``Lambda`` holding ``K.l2_normalize``,
saved as legacy ``.h5``; and the seed's own preprocessing and score, written out on their own.

Two forms of the graph:
- :func:`seed_get_model`: the seed's own ``get_model`` (TagSuggestionImages' ``models.py``),
  layer for layer: the backbone is a nested model called on a new input (so the outer layers
  refer to its node 1), one ``_norm`` Lambda shared by the image and both label branches, one
  Embedding shared by the two label inputs, the training model compiled with the triplet loss.
  ``version="dense50"`` is its last version (a Dense "img_repr" of 50 before ``_norm``; the
  image sub-model is ``Model(input_1, image_representation)``); ``version="pooled"`` is the
  March 2020 version (max and average pooling concatenated; the "image" sub-model is the
  three-input training graph, ``Model([input_1, input_2, input_3], x)``).
  :func:`save_like_the_seed` saves them as its ``train.py`` (whole ``model.h5``) and
  ``save_submodels.py`` (``image_representation.h5``, without optimizer) did.
- :func:`seed_model`: the same head on the backbone's own input (a flat graph).
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


def triplet_loss(y_true, y_pred, alpha=0.4):
    """The seed's loss, as its models.py computes it (anchor, positive, negative thirds)."""
    total = y_pred.shape.as_list()[-1]
    anchor, positive = y_pred[:, 0:int(total * 1 / 3)], y_pred[:, int(total * 1 / 3):int(total * 2 / 3)]
    negative = y_pred[:, int(total * 2 / 3):int(total * 3 / 3)]
    basic_loss = K.sum(K.square(anchor - positive), axis=1) - K.sum(K.square(anchor - negative), axis=1) + alpha
    return K.maximum(basic_loss, 0.0)


def seed_get_model(version: str = "dense50", vocab_size: int = 1000, alpha: float = 1.0, seed: int = 0):
    """``(model, model_image, model_label)`` built as the seed's ``get_model`` builds them
    (see the module), with ``weights=None`` (nothing downloaded) and a small vocabulary.
    ``alpha`` < 1 makes a narrower MobileNetV2 for quick tests (the seed used 1.0)."""
    global K
    import tf_keras as k2
    from tf_keras import backend as K
    from tf_keras.layers import (Concatenate, Dense, Dropout, Embedding, Flatten, GlobalAveragePooling2D,
                                 GlobalMaxPooling2D, Input, Lambda)
    from tf_keras.models import Model
    from tf_keras.optimizers import Adam

    if version not in ("dense50", "pooled"):
        raise ValueError(f"version is dense50 or pooled, not {version!r}")
    k2.utils.set_random_seed(seed)
    lr, input_shape = 0.0001, (None, None, 3)
    embedding_size = 300 if version == "dense50" else 100
    input_1 = Input(input_shape)
    input_2 = Input(shape=(1,))
    input_3 = Input(shape=(1,))

    _norm = Lambda(lambda x: K.l2_normalize(x, axis=-1))

    base_model = k2.applications.MobileNetV2(include_top=False, input_shape=input_shape, weights=None, alpha=alpha)

    x1 = base_model(input_1)
    if version == "dense50":
        out1 = GlobalMaxPooling2D()(Dropout(0.1)(x1))
        out2 = GlobalAveragePooling2D()(x1)
        image_representation = Concatenate(axis=-1)([out1, out2])
        image_representation = Dropout(0.1)(image_representation)
        image_representation = Dense(50, name="img_repr")(image_representation)
        image_representation = _norm(image_representation)
        embed = Embedding(vocab_size, embedding_size, name="embed")
        dense_label = Dense(50, name="label_repr")
        x2 = dense_label(Dropout(0.1)(Flatten()(embed(input_2))))
        x3 = dense_label(Dropout(0.1)(Flatten()(embed(input_3))))
    else:
        out1 = GlobalMaxPooling2D()(Dropout(0.5)(x1))
        out2 = GlobalAveragePooling2D()(x1)
        image_representation = Concatenate(axis=-1)([out1, out2])
        image_representation = _norm(image_representation)
        embed = Embedding(vocab_size, embedding_size, name="embed")
        x2 = Flatten()(embed(input_2))
        x3 = Flatten()(embed(input_3))

    label1 = _norm(x2)
    label2 = _norm(x3)

    x = Concatenate(axis=-1)([image_representation, label1, label2])

    model = Model([input_1, input_2, input_3], x)

    if version == "dense50":
        model_image = Model(input_1, image_representation)
    else:
        model_image = Model([input_1, input_2, input_3], x)
    model_label = Model([input_2], label1)

    model.compile(loss=triplet_loss, optimizer=Adam(lr))
    model_image.compile(loss="mae", optimizer=Adam(lr))
    model_label.compile(loss="mae", optimizer=Adam(lr))
    return model, model_image, model_label


def save_like_the_seed(folder, model, model_image) -> None:
    """``model.h5`` as its training checkpoint saved it (whole, with the optimizer) and
    ``image_representation.h5`` as ``save_submodels.py`` did (``include_optimizer=False``)."""
    model.save(str(folder / "model.h5"))
    model_image.save(str(folder / "image_representation.h5"), include_optimizer=False)


def seed_embedding(model_image, image: np.ndarray, dim: int) -> np.ndarray:
    """What the seed's image model gives for one preprocessed picture: its first ``dim``
    values (the whole output of a one-input image model; the image third of a three-input one)."""
    inputs = [image[None] if len(i.shape) == 4 else np.zeros((1, *i.shape[1:]), np.float32) for i in model_image.inputs]
    return model_image.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)[0][:dim]


def set_statistics_from(model, batch: np.ndarray) -> None:
    """Batch-norm moving statistics from real photos, so features have a trained model's scale."""
    import tf_keras as k2

    for layer in _all_layers(model):
        if isinstance(layer, k2.layers.BatchNormalization):
            layer.momentum = 0.0
    inputs = [batch if len(i.shape) == 4 else np.zeros((len(batch), *i.shape[1:]), np.float32) for i in model.inputs]
    model(inputs if len(inputs) > 1 else inputs[0], training=True)  # label inputs (ids): zeros


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


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
