"""Probes for training tests: the model as ``fit`` found it and as it left it, and whether
training did what it is for.

An epoch's mean triplet loss on a few dozen synthetic images is too noisy to say whether
training ran, and weights that moved say nothing of the direction they moved in (a loss with
the wrong sign moves them as much). What training is for can be measured: on generated photos
that no run trained on, the trained bundle must rank the true tags far above where the same
model ranked them before ``fit`` (:func:`assert_training_ranks_held_out`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def record_weights_callback(path: str | Path):
    """A callback that saves to ``path``: ``before_i`` and ``after_i`` for every trainable
    weight, and the starting point whole: ``start_encoder_i`` (every weight of the image
    encoder, batch-norm statistics included) and ``start_labels`` (the unit label table)."""
    import keras

    class RecordWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.before = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]
            self.start_encoder = [np.asarray(w) for w in self.model.encoder.get_weights()]
            self.start_labels = np.asarray(self.model.label_embeddings_array())

        def on_train_end(self, logs=None):
            after = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]
            np.savez(path, **{f"before_{i}": w for i, w in enumerate(self.before)},
                     **{f"after_{i}": w for i, w in enumerate(after)},
                     **{f"start_encoder_{i}": w for i, w in enumerate(self.start_encoder)},
                     start_labels=self.start_labels)

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


def untrained_ranking(bundle: str | Path, weights: str | Path, held_out):
    """How the model ranked ``held_out`` (a ``LabeledDataset``) when ``fit`` began: the bundle's
    Keras encoder with the starting weights saved by :func:`record_weights_callback`, the
    starting label table, the bundle's own decoding, crops and normalisation."""
    import keras

    from image_tag_suggestion.bundle import open_bundle
    from image_tag_suggestion.training.decoding import keep, serving_batches
    from image_tag_suggestion.training.evaluation import evaluate_scores

    found = open_bundle(bundle)
    saved = np.load(weights)
    encoder = keras.saving.load_model(found.keras_path)
    count = sum(name.startswith("start_encoder_") for name in saved.files)
    encoder.set_weights([saved[f"start_encoder_{i}"] for i in range(count)])  # same layers, same order
    embeddings, rows = [], []
    for batch, counts, batch_rows in serving_batches(held_out, found.preprocessing):
        outputs = np.split(np.asarray(encoder.predict_on_batch(batch)), np.cumsum(counts)[:-1])
        embeddings += [crops.mean(axis=0) for crops in outputs]  # a panorama's crops averaged, as served
        rows += batch_rows
    embeddings = np.stack(embeddings)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    columns = [found.load_labels().class_ids.index(label) for label in held_out.label_ids]
    return evaluate_scores(embeddings @ saved["start_labels"][columns].T, keep(held_out, rows))


def assert_training_ranks_held_out(bundle: str | Path, weights: str | Path, held_out, floor: float, margin: float):
    """Training did what it is for: on ``held_out`` (generated photos no run trained on), the
    bundle as served ranks true tags with a mean average precision of at least ``floor`` and
    at least ``margin`` above the same model before ``fit`` (:func:`untrained_ranking`).
    A loss with the wrong sign moves every weight too, but ranks true tags last, below
    chance (AP about 0.5, hit@1 0.4 on ``synthetic_data``). Returns (untrained, trained)."""
    from image_tag_suggestion.training.evaluation import evaluate_bundle

    untrained = untrained_ranking(bundle, weights, held_out)
    trained = evaluate_bundle(bundle, held_out)
    figures = (f"held-out mAP {untrained.mean_ap:.3f} -> {trained.mean_ap:.3f}, "
               f"hit@1 {untrained.hits[1]:.3f} -> {trained.hits[1]:.3f}")
    print(figures)
    assert trained.images == untrained.images == len(held_out.examples), figures
    assert trained.mean_ap >= floor and trained.mean_ap >= untrained.mean_ap + margin, figures
    return untrained, trained
