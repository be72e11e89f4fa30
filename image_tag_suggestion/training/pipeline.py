"""Labelled records -> tf.data batches of (inputs, positive, negative, positive mask).

Decoding runs serving's decoder (``decoding.decode_for_training``: Pillow, EXIF
orientation, transparency on white) in tf.data's parallel map; resizing and
augmentation are tf.data ops. Images that fail to decode are dropped by
``ignore_errors`` rather than ending a long run (``decoding.readable`` has already left
out, and counted, the files that are no image at all). Negatives are drawn so they are never positives of that image:
a verified negative half of the time when the image has one, else any label
outside its positives (the loss also mines a semi-hard one over all labels).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .datasets import LabeledDataset
from .decoding import decode_for_training

AUTOTUNE = tf.data.AUTOTUNE
RESIZE_RATIO = 256 / 224  # serving resizes the short side to this times the crop


def _ragged(rows) -> tf.RaggedTensor:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    values = np.array([v for r in rows for v in r], dtype=np.int32)
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def _label_sampler(n_labels: int):
    def sample(positives, negatives):
        mask = tf.reduce_max(tf.one_hot(positives, n_labels, dtype=tf.uint8), axis=0)
        positive = tf.gather(positives, tf.random.uniform([], 0, tf.size(positives), dtype=tf.int32))
        outside = tf.cast(tf.where(tf.equal(mask, 0))[:, 0], tf.int32)
        any_negative = tf.gather(outside, tf.random.uniform([], 0, tf.size(outside), dtype=tf.int32))
        n_verified = tf.size(negatives)
        use_verified = tf.logical_and(n_verified > 0, tf.random.uniform([]) < 0.5)
        # The pool ends with any_negative, so the index is valid with no verified negatives too.
        pool = tf.concat([negatives, any_negative[None]], axis=0)
        pick = tf.random.uniform([], 0, tf.maximum(n_verified, 1), dtype=tf.int32)
        negative = tf.gather(pool, tf.where(use_verified, pick, n_verified))
        return positive, negative, mask

    return sample


def _usable(dataset: LabeledDataset) -> list[int]:
    """Rows that can form a triplet: at least one label is not a positive."""
    n = len(dataset.label_ids)
    return [i for i, e in enumerate(dataset.examples) if len(set(e.positives)) < n]


def _shard_by_element(data: tf.data.Dataset) -> tf.data.Dataset:
    """Workers of a cluster split the examples (the file list is one tensor, so no file sharding)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def load_and_augment(path, input_size: int, mean: float, std: float, training: bool):
    min_size = int(np.ceil(input_size * 1.3))  # the largest random resize below, decoded no smaller
    image = tf.numpy_function(lambda p: decode_for_training(p, min_size), [path], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    image = tf.cast(image, tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    short = tf.reduce_min(shape)
    if training:
        target = float(input_size) * tf.random.uniform([], 1.0, 1.3)
    else:
        target = tf.constant(float(input_size) * RESIZE_RATIO)
    size = tf.cast(tf.math.ceil(shape * target / short), tf.int32)
    size = tf.maximum(size, input_size)
    image = tf.image.resize(image, size, method="bicubic", antialias=True)
    if training:
        image = tf.image.random_crop(image, [input_size, input_size, 3])
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_brightness(image, 20.0)
        image = tf.image.random_contrast(image, 0.85, 1.15)
        image = tf.image.random_saturation(image, 0.85, 1.15)
    else:
        offset = (size - input_size) // 2
        image = tf.image.crop_to_bounding_box(image, offset[0], offset[1], input_size, input_size)
    image = tf.clip_by_value(image, 0.0, 255.0)
    image = (image - mean) / std
    image.set_shape([input_size, input_size, 3])
    return image


def image_dataset(dataset: LabeledDataset, input_size: int, normalisation: tuple[float, float], batch_size: int,
                  training: bool, seed: int = 0) -> tf.data.Dataset:
    """Batches of (images, positive, negative, positive_mask) read from files."""
    rows = _usable(dataset)
    examples = [dataset.examples[i] for i in rows]
    paths = tf.constant([e.path for e in examples])
    data = tf.data.Dataset.from_tensor_slices((paths, _ragged([e.positives for e in examples]),
                                               _ragged([e.negatives for e in examples])))
    if training:
        data = data.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
    sample = _label_sampler(len(dataset.label_ids))
    mean, std = normalisation

    def prepare(path, positives, negatives):
        positive, negative, mask = sample(positives, negatives)
        return load_and_augment(path, input_size, mean, std, training), positive, negative, mask

    data = data.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=not training).ignore_errors(log_warning=True)
    return _shard_by_element(data.batch(batch_size).prefetch(AUTOTUNE))


def feature_dataset(features: np.ndarray, dataset: LabeledDataset, batch_size: int, training: bool,
                    seed: int = 0) -> tf.data.Dataset:
    """Batches of (features, positive, negative, positive_mask) from cached backbone features.

    ``features``: (images, views, dim); training picks a random view (an augmented copy)
    of each image per step, evaluation the first (the plain centre crop).
    """
    rows = _usable(dataset)
    examples = [dataset.examples[i] for i in rows]
    data = tf.data.Dataset.from_tensor_slices((features[rows].astype(np.float32), _ragged([e.positives for e in examples]),
                                               _ragged([e.negatives for e in examples])))
    if training:
        data = data.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
    sample = _label_sampler(len(dataset.label_ids))

    def prepare(views, positives, negatives):
        view = tf.random.uniform([], 0, tf.shape(views)[0], dtype=tf.int32) if training else 0
        positive, negative, mask = sample(positives, negatives)
        return views[view], positive, negative, mask

    return _shard_by_element(data.map(prepare, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE))
