"""Train the embedding model on a labelled dataset and export a bundle the app and the
CLI serve unchanged.

    image-tags train --data photos/ --format folders --backbone efficientnet_lite0 --out models/mine

Two paths, one model:
- backbone trained (``mobilenet_v2`` by default, the seed's): images stream through
  tf.data with augmentation; meant for a GPU and large data such as Open Images.
- backbone frozen (default for ``efficientnet_lite0``): the ImageNet backbone's pooled
  features are computed once per image (plus a flipped view), and only the head and the
  label table train, which takes minutes on a laptop CPU.

Both decode as serving does (``decoding.py``: Pillow, EXIF orientation, transparency on
white), and what serving computes (the frozen features, the validation embeddings the
calibration is fitted on) comes from serving's own resize and centre crop. Photos that
cannot be read are left out and counted (``metrics["unreadable_images"]`` and a warning).

Distribution: ``tf.distribute.MirroredStrategy`` when several GPUs are visible, and
``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` describes a cluster; the batch size
given is per replica. Every worker runs the same command; the chief writes the bundle.

Speed on accelerators: ``precision="auto"`` trains in mixed bfloat16 on GPUs of compute
capability 8.0 and newer, mixed float16 (with loss scaling) on 7.x, float32 on CPUs;
``jit_compile=None`` leaves XLA to Keras (on for one GPU, off on CPUs and under
tf.distribute). Exported encoders are always float32.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..bundle import write_config
from ..files import install_folder, staging_folder
from ..labels import LabelTable
from ..preprocessing import Preprocessing
from .calibration import MIN_SCALE, calibration_pairs, fit_offset, fit_platt
from .datasets import DatasetError, LabeledDataset
from .decoding import UNREADABLE, keep, readable, serving_batches
from .evaluation import evaluate_scores

ENCODER_TFLITE, ENCODER_KERAS = "encoder.tflite", "encoder.keras"
INT8_FOLDER, INT8_REPRESENTATIVE = "int8", 300
REPORT_FILES = ("metrics.json", "history.json", "report.png")
INT8_AGREEMENT = 0.98  # the share of validation photos whose best tag an int8 copy should keep
#: With cached features a step costs milliseconds; small datasets get at least this many
#: steps per epoch (random views and labels differ each pass), so 20 photos per tag train.
MIN_FEATURE_STEPS = 50
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclass
class TrainConfig:
    """Everything that decides a training run (written into the bundle's config)."""

    backbone: str = "mobilenet_v2"
    embedding_dim: int = 50
    input_size: int = 224
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    margin: float = 0.4
    val_fraction: float = 0.1
    patience: int = 3
    seed: int = 0
    freeze_backbone: bool | None = None  # None: frozen for efficientnet_lite0, trained for mobilenet_v2
    weights: str | None = None
    alpha: float = 1.0
    precision: str = "auto"  # one of PRECISIONS
    jit_compile: bool | None = None  # None: Keras decides (XLA on one GPU only)
    int8: bool = False  # also export a full-integer copy of the bundle in OUT/int8

    @property
    def frozen(self) -> bool:
        return self.backbone == "efficientnet_lite0" if self.freeze_backbone is None else self.freeze_backbone


def choose_strategy():
    """The existing engine for more than one GPU or machine; the default strategy otherwise."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Whether this process writes the results: always, except on the non-chief workers of a cluster."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = cluster.get("task", {})
    if not task:
        return True
    if task.get("type") == "worker" and "chief" not in cluster.get("cluster", {}):
        return task.get("index", 0) == 0
    return task.get("type") == "chief"


def choose_precision(requested: str = "auto") -> str:
    """The Keras dtype policy to train with (``auto``: by the first GPU's compute capability)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose from {PRECISIONS}")
    if requested != "auto":
        return requested
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"  # CPUs have no fast half-precision units: mixed is slower there
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
    if capability >= (8, 0):
        return "mixed_bfloat16"  # float32's range: no loss scaling needed
    return "mixed_float16" if capability >= (7, 0) else "float32"


@contextmanager
def dtype_policy(name: str):
    """Layers built inside use policy ``name``; the global policy is restored after."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def serving_preprocessing(config: TrainConfig) -> Preprocessing:
    """What the exported bundle's config.yaml will say: serving's resize, crop and normalisation."""
    from .models import BACKBONE_NORMALISATION

    mean, std = BACKBONE_NORMALISATION[config.backbone]
    return Preprocessing(input_size=config.input_size, resize=round(config.input_size * 256 / 224),
                         mean=(mean,) * 3, std=(std,) * 3, resample="bicubic")


def predict_as_served(model, dataset: LabeledDataset, config: TrainConfig, views: int = 1) -> tuple[np.ndarray, list[int]]:
    """``model``'s outputs on the images as serving decodes and crops them, (images, views, dim)
    (view 1: the mirror image), and the dataset rows they are (an undecodable image is left out)."""
    outputs, rows = [], []
    for batch, counts, batch_rows in serving_batches(dataset, serving_preprocessing(config), config.batch_size):
        ends = np.cumsum(counts)[:-1]

        def per_image(crops):  # a panorama's crops averaged, as serving does
            return np.stack([part.mean(axis=0) for part in np.split(np.asarray(model.predict_on_batch(crops)), ends)])

        views_out = [per_image(batch)]
        if views > 1:
            views_out.append(per_image(np.ascontiguousarray(batch[:, :, ::-1])))
        outputs.append(np.stack(views_out, axis=1))
        rows += batch_rows
    if not outputs:
        raise DatasetError("none of the images could be decoded")
    return np.concatenate(outputs), rows


def train(dataset: LabeledDataset, config: TrainConfig, out: str | Path, checkpoint_dir: str | Path | None = None,
          verbose: int = 1, callbacks: list | None = None, strategy=None, force: bool = False) -> dict:
    """Train, calibrate, evaluate on the validation split and export a bundle to ``out``.

    ``out`` is checked before training starts: a folder holding anything but a bundle this
    program wrote is refused (``force``: write in beside what is there; see ``files.py``).
    The bundle, its report and int8 copy are written in a staging folder and moved in whole.
    With ``checkpoint_dir``, an interrupted run started again with the same folder
    resumes at the last finished epoch. ``callbacks``: extra Keras callbacks.
    ``strategy``: a ``tf.distribute`` strategy (default: ``choose_strategy()``).
    """
    import keras

    from ..files import check_output_folder
    from .models import build_image_encoder

    out = Path(out)
    if is_chief():
        check_output_folder(out, force)
    keras.utils.set_random_seed(config.seed)
    dataset, unreadable = readable(dataset)
    train_set, val_set = dataset.split(config.val_fraction, config.seed)
    strategy = strategy or choose_strategy()
    precision = choose_precision(config.precision)

    networks = build_networks(config, len(dataset.label_ids), strategy, precision)
    data = training_data(networks, train_set, val_set, config, strategy)
    history = fit(networks.model, data, config, strategy, checkpoint_dir, callbacks, verbose)

    # Calibration, metrics and export use a plain float32 copy outside the strategy:
    # what serving runs, with rows in order.
    backbone, head = serving_copy(networks.backbone, networks.head, config)
    encoder = build_image_encoder(backbone, head)
    val_embeddings, val_set = validation_embeddings(encoder, head, data, config)
    label_table = networks.model.label_embeddings_array()
    scale, offset, probabilities, warnings = calibrate(val_embeddings @ label_table.T, val_set)

    skipped = len(unreadable) + data.train_set.skipped[UNREADABLE] + val_set.skipped[UNREADABLE]
    if skipped:
        warnings.append(f"{skipped} of {len(dataset.examples) + len(unreadable)} images could not be read and were "
                        f"left out" + (f", e.g. {unreadable[0]}" if unreadable else ""))
    metrics = {**evaluate_scores(probabilities, val_set).as_dict(), "calibration": {"scale": scale, "offset": offset},
               "train_images": len(data.train_set.examples), "val_images": len(val_set.examples),
               "unreadable_images": skipped,
               "epochs_run": len(history["loss"]), "precision": precision,
               "jit_compile": bool(networks.model.jit_compile), "replicas": strategy.num_replicas_in_sync,
               "warnings": warnings}
    if is_chief():  # every worker of a cluster gets here with the same weights; one writes
        with staging_folder(out) as staging:
            staging = Path(staging)
            export_bundle(staging, encoder, dataset, label_table, config, scale, offset, metrics, name=out.name)
            if config.int8:
                metrics["int8"] = export_int8(staging, encoder, data.train_set, val_set, config)
                metrics["int8"]["folder"] = str(out / INT8_FOLDER)
                if metrics["int8"]["top_tag_agreement"] < INT8_AGREEMENT:
                    metrics["warnings"].append(
                        f"the int8 copy keeps the best tag of only {metrics['int8']['top_tag_agreement']:.0%} of the "
                        f"validation photos (the guard wants {INT8_AGREEMENT:.0%}): prefer the float bundle in {out}")
            write_report(staging, history, metrics)
            install_folder(staging, out, force)
    return metrics


@dataclass
class Networks:
    """What trains: the image backbone, the embedding head and the joint model with the label table."""

    backbone: object
    head: object
    model: object


def build_networks(config: TrainConfig, num_labels: int, strategy, precision: str) -> Networks:
    """Build the models under ``strategy``; a frozen backbone only computes features, so it is
    kept outside the strategy and every worker computes them locally and in order
    (distributed predict returns rows in shard order)."""
    import keras

    from .models import TagEmbeddingModel, build_backbone, build_head, build_image_encoder

    if config.frozen:
        with dtype_policy(precision):
            backbone = build_backbone(config.backbone, config.input_size, config.weights, config.alpha)
        backbone.trainable = False
    with strategy.scope(), dtype_policy(precision):
        if not config.frozen:
            backbone = build_backbone(config.backbone, config.input_size, config.weights, config.alpha)
        head = build_head(backbone.output_shape[-1], config.embedding_dim)
        encoder = head if config.frozen else build_image_encoder(backbone, head)
        model = TagEmbeddingModel(encoder, num_labels, config.embedding_dim, config.margin).build_now()
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      jit_compile="auto" if config.jit_compile is None else config.jit_compile)
    return Networks(backbone, head, model)


@dataclass
class TrainingData:
    """The ``tf.data`` pipelines fit reads, and the photos that made it into them."""

    train: object
    val: object
    steps_per_epoch: int | None
    train_set: LabeledDataset
    val_set: LabeledDataset
    val_features: np.ndarray | None = None  # frozen backbone: the validation photos' features


def training_data(networks: Networks, train_set: LabeledDataset, val_set: LabeledDataset, config: TrainConfig,
                  strategy) -> TrainingData:
    """Frozen backbone: features computed once (two views of each training photo) and the
    head started at the tag centroids. Trained backbone: photos streamed from disk."""
    from .models import BACKBONE_NORMALISATION
    from .pipeline import feature_dataset, image_dataset

    if config.frozen:
        train_features, rows = predict_as_served(networks.backbone, train_set, config, views=2)
        train_set = keep(train_set, rows)
        val_features, rows = predict_as_served(networks.backbone, val_set, config)
        val_set = keep(val_set, rows)
        start_from_centroids(networks.head, networks.model, train_features[:, 0], train_set)
        return TrainingData(
            train=feature_dataset(train_features, train_set, config.batch_size, training=True, seed=config.seed).repeat(),
            val=feature_dataset(val_features, val_set, config.batch_size, training=False, seed=config.seed),
            steps_per_epoch=max(MIN_FEATURE_STEPS, -(-len(train_set.examples) // config.batch_size)),
            train_set=train_set, val_set=val_set, val_features=val_features)
    normalisation = BACKBONE_NORMALISATION[config.backbone]
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    return TrainingData(
        train=image_dataset(train_set, config.input_size, normalisation, global_batch, True, config.seed),
        val=image_dataset(val_set, config.input_size, normalisation, global_batch, False, config.seed),
        steps_per_epoch=None,  # one pass over the files
        train_set=train_set, val_set=val_set)


def fit(model, data: TrainingData, config: TrainConfig, strategy, checkpoint_dir: str | Path | None,
        extra_callbacks: list | None, verbose: int) -> dict[str, list[float]]:
    """Keras fit with early stopping (best weights kept) and, with ``checkpoint_dir``, resumable
    epochs; returns one number per epoch and metric."""
    callbacks = fit_callbacks(config, strategy, checkpoint_dir) + list(extra_callbacks or [])
    history = model.fit(data.train, validation_data=data.val, epochs=config.epochs,
                        steps_per_epoch=data.steps_per_epoch, callbacks=callbacks, verbose=verbose)
    # A cluster's logs carry 1-element arrays (see TagEmbeddingModel.logs).
    return {key: [float(np.mean(v)) for v in values] for key, values in history.history.items()}


def fit_callbacks(config: TrainConfig, strategy, checkpoint_dir: str | Path | None) -> list:
    import keras
    import tensorflow as tf

    callbacks = [keras.callbacks.EarlyStopping("val_loss", patience=config.patience, restore_best_weights=True)]
    if checkpoint_dir:
        checkpoint_dir = Path(checkpoint_dir)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras' checkpoint callbacks are not cluster-aware: one folder per worker.
            checkpoint_dir = checkpoint_dir / f"worker-{strategy.cluster_resolver.task_id}"
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        # BackupAndRestore resumes an interrupted run at the epoch it reached.
        callbacks.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir / "backup")))
        callbacks.append(keras.callbacks.ModelCheckpoint(str(checkpoint_dir / "best.weights.h5"), monitor="val_loss",
                                                         save_best_only=True, save_weights_only=True))
    return callbacks


def validation_embeddings(encoder, head, data: TrainingData, config: TrainConfig) -> tuple[np.ndarray, LabeledDataset]:
    """The validation photos' embeddings as the serving ``encoder`` computes them (from the
    cached features when the backbone was frozen), and the photos they belong to."""
    if data.val_features is not None:
        return np.asarray(head.predict(data.val_features[:, 0], verbose=0)), data.val_set
    embeddings, rows = predict_as_served(encoder, data.val_set, config)
    return embeddings[:, 0], keep(data.val_set, rows)


def calibrate(similarities: np.ndarray, val_set: LabeledDataset) -> tuple[float, float, np.ndarray, list[str]]:
    """Platt scaling of cosine similarities on the validation photos, so a score reads as the
    probability the tag is right; the slope is kept at ``MIN_SCALE`` or more, since a few
    validation photos can fit one that reverses the ranking (and a warning says so).
    Returns (scale, offset, the validation probabilities, warnings)."""
    pairs = calibration_pairs(similarities, *val_set.label_matrices())
    scale, offset = fit_platt(*pairs)
    warnings = learning_warnings(scale, len(val_set.examples))
    if scale < MIN_SCALE:
        scale, offset = MIN_SCALE, fit_offset(*pairs, MIN_SCALE)
    return scale, offset, 1.0 / (1.0 + np.exp(-(scale * similarities + offset))), warnings


def start_from_centroids(head, model, features: np.ndarray, dataset: LabeledDataset) -> None:
    """Start where a nearest-centroid classifier already is, so a few photos per tag suffice.

    The head projects the features on their principal directions (PCA to the embedding
    size) and each label starts at the mean of its photos' projected embeddings; training
    then refines both. Labels without a photo keep their random start.
    """
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0)
    _, _, directions = np.linalg.svd(features - mean, full_matrices=False)
    dense = head.get_layer("embedding")
    kernel = np.zeros(dense.kernel.shape)
    k = min(kernel.shape[1], directions.shape[0])
    kernel[:, :k] = directions[:k].T
    bias = -mean @ kernel
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    embedded = features @ kernel + bias
    embedded /= np.maximum(np.linalg.norm(embedded, axis=1, keepdims=True), 1e-12)
    positive, _ = dataset.label_matrices()
    table = np.array(model.label_embeddings.get_weights()[0], dtype=np.float64)
    for label in np.flatnonzero(positive.any(axis=0)):
        centroid = embedded[positive[:, label]].mean(axis=0)
        table[label] = centroid / max(np.linalg.norm(centroid), 1e-12)
    model.label_embeddings.set_weights([table.astype(np.float32)])


def learning_warnings(fitted_scale: float, val_images: int) -> list[str]:
    """What the validation split says against trusting this bundle."""
    if fitted_scale <= 0:
        return [f"on the {val_images} validation images, true tags are not closer to their images than other "
                f"tags (calibration slope {fitted_scale:.2f}): either the model has not learnt or the validation "
                f"split is too small to tell; scores keep the embedding's order with a weak calibration "
                f"(slope {MIN_SCALE}). Train longer, on more images, or from pretrained weights"]
    return []


def serving_copy(backbone, head, config: TrainConfig):
    """The trained backbone and head rebuilt with float32 layers outside any distribution strategy."""
    from .models import build_backbone, build_head

    with dtype_policy("float32"):
        backbone32 = build_backbone(config.backbone, config.input_size, None, config.alpha)
        head32 = build_head(backbone.output_shape[-1], config.embedding_dim)
    backbone32.set_weights(backbone.get_weights())
    head32.set_weights(head.get_weights())
    return backbone32, head32


def export_bundle(out: Path, encoder, dataset: LabeledDataset, label_table: np.ndarray, config: TrainConfig,
                  scale: float, offset: float, metrics: dict, name: str | None = None) -> Path:
    """Write the bundle: ``.tflite`` for serving, ``.keras`` for retraining, label table, config.
    ``name``: the bundle's name (default: the folder's)."""
    from ..conversion.export import export_tflite

    out.mkdir(parents=True, exist_ok=True)
    encoder.save(out / ENCODER_KERAS)
    export_tflite(encoder, out / ENCODER_TFLITE, float16=True)
    table = LabelTable(dataset.label_ids, dataset.label_names, label_table)
    written = table.save(out, embeddings_dtype=np.float32)
    preprocessing = serving_preprocessing(config)
    write_config(out, {
        "name": name or out.name,
        "kind": "embedding",
        "description": f"{config.backbone} -> {config.embedding_dim}-d triplet embedding, {len(dataset.label_ids)} tags",
        "encoder": {"tflite": ENCODER_TFLITE, "keras": ENCODER_KERAS, "embedding_dim": config.embedding_dim,
                    "preprocessing": preprocessing.to_config()},
        "scoring": {"activation": "sigmoid", "normalize": True, "scale": scale, "offset": offset},
        "ranking": {"order": "score"},
        "training": {**asdict(config), "validation": {k: v for k, v in metrics.items() if k != "calibration"}},
        "files": {file: None for file in [ENCODER_TFLITE, ENCODER_KERAS, *written]},
        # What train() writes beside the bundle: replaced with it next time, never anything else.
        "outputs": [*REPORT_FILES, *([INT8_FOLDER] if config.int8 else [])],
    })
    return out


def export_int8(out: Path, encoder, train_set: LabeledDataset, val_set: LabeledDataset, config: TrainConfig) -> dict:
    """The bundle in ``out`` again in ``out/int8``, with a full-integer encoder whose activation
    ranges are measured on training photos (up to 300, as served), and the guard: how often it
    keeps the float bundle's best tag on the validation photos, which it never saw."""
    import shutil

    import yaml

    from ..bundle import CONFIG_FILE, open_bundle
    from ..conversion.export import export_tflite
    from ..predictors import ImagePredictor, LabelPredictor

    representative = []
    for batch, _, _ in serving_batches(train_set, serving_preprocessing(config), config.batch_size):
        representative.append(batch)
        if sum(len(b) for b in representative) >= INT8_REPRESENTATIVE:
            break
    target = out / INT8_FOLDER
    target.mkdir()
    export_tflite(encoder, target / ENCODER_TFLITE, representative=np.concatenate(representative)[:INT8_REPRESENTATIVE])
    bundle_config = yaml.safe_load((out / CONFIG_FILE).read_text(encoding="utf-8"))
    label_files = [name for name in bundle_config["files"] if name not in (ENCODER_TFLITE, ENCODER_KERAS)]
    for name in label_files:
        shutil.copyfile(out / name, target / name)
    encoder_section = {k: v for k, v in bundle_config["encoder"].items() if k != "keras"}
    write_config(target, {**bundle_config, "name": f"{bundle_config['name']}-int8", "encoder": encoder_section,
                          "description": bundle_config["description"] + " (int8 encoder)",
                          "files": {name: None for name in [ENCODER_TFLITE, *label_files]}})
    files = [example.path for example in val_set.examples]
    best = []
    for folder in (out, target):
        bundle = open_bundle(folder)
        best.append(LabelPredictor(bundle).scores(ImagePredictor(bundle).predict_from_files(files)).argmax(axis=1))
    return {"folder": str(target), "top_tag_agreement": float(np.mean(best[0] == best[1])), "validation_images": len(files)}


def write_report(out: Path, history: dict, metrics: dict) -> None:
    """``metrics.json``, ``history.json`` and ``report.png`` (loss curves, validation metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")  # in the staging folder: moved in whole
    (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "val_loss"):
        if key in history:
            left.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    left.set_xlabel("epoch")
    left.set_ylabel("triplet loss")
    left.legend()
    left.set_title("training")
    names = ["mAP", "hit@1", "hit@5", "hit@20"]
    right.bar(names, [metrics.get(n, float("nan")) for n in names], color="#1f77b4")
    right.set_ylim(0, 1)
    right.set_title(f"validation ({metrics['val_images']} images)")
    figure.tight_layout()
    figure.savefig(out / "report.png", dpi=100)
    plt.close(figure)
