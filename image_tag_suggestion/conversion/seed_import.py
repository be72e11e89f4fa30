"""The original app's published model -> a normal bundle, without running any of its code.

The original app (the "seed") released two files:

- ``image_representation.h5``: a Keras 2 functional model saved in the legacy HDF5 format.
  A MobileNetV2 without its top, then either max and average pooling concatenated (2,560
  values) or a Dense projection (50 in later versions), then a ``Lambda`` layer holding
  ``K.l2_normalize(x, axis=-1)`` as marshalled Python bytecode. Modern Keras refuses to
  load such a Lambda, and running bytecode from a download would run whatever it says.
- ``labels.json``: ``{"label name": [floats, one per embedding value], ...}``.

Here the graph is rebuilt from the file's ``model_config`` with real Keras layers: each
layer class must be one of :data:`LAYERS`; the Lambda is accepted only when its bytecode
names ``l2_normalize`` (read as bytes, never executed) and becomes ``UnitNormalization``;
anything else is refused with the layer's name. Weights are read with h5py, layer by
layer, by name. The result is exported to ``.tflite`` (float32) and served like any
bundle, with the seed's own preprocessing (the whole picture fitted inside 224x224,
centred on black, ``x / 127.5 - 1``) and score ``1 - ||e - l||^2 / 4`` written as the
scoring rule ``0.5 * e.l + 0.75 - ||l||^2 / 4`` (``e`` is unit length; ``l`` need not be).

    image-tags import-seed --h5 image_representation.h5 --labels labels.json [--out DIR]
"""

from __future__ import annotations

import base64
import inspect
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from ..bundle import write_config
from ..labels import LabelTable
from ..preprocessing import Preprocessing
from .export import export_tflite

ENCODER_FILE = "encoder.tflite"
PREPROCESSING = Preprocessing(input_size=224, resize=224, mean=(127.5,) * 3, std=(127.5,) * 3, resample="bicubic",
                              fit="pad")
# The layer classes a MobileNetV2 embedding model is made of; nothing else is rebuilt.
LAYERS = ("InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Activation", "ZeroPadding2D",
          "Add", "Dropout", "GlobalMaxPooling2D", "GlobalAveragePooling2D", "Concatenate", "Dense", "Lambda",
          "Functional", "Model")
UNIT_TOLERANCE = 1e-3


class SeedImportError(ValueError):
    """The files are not the seed's model (or a layer cannot be rebuilt safely)."""


def read_h5(path: str | Path) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """The model's config and its weights, ``{layer name: [arrays in saved order]}``."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if "model_config" not in h5.attrs:
                raise SeedImportError(f"{path}: no model_config inside (weights only?); the seed's file holds a whole model")
            config = h5.attrs["model_config"]
            config = json.loads(config.decode("utf-8") if isinstance(config, bytes) else config)
            group = h5["model_weights"] if "model_weights" in h5 else h5
            weights: dict[str, list[np.ndarray]] = {}
            for layer_name in _names(group.attrs.get("layer_names", [])):
                layer_group = group[layer_name]
                weight_names = _names(layer_group.attrs.get("weight_names", []))
                for weight_name in weight_names:
                    owner = _owner(layer_name, weight_name, weight_names)
                    weights.setdefault(owner, []).append(np.asarray(layer_group[weight_name], dtype=np.float32))
    except OSError as exc:
        raise SeedImportError(f"{path}: not a readable HDF5 file ({exc})") from None
    return config, weights


def _owner(layer_name: str, weight_name: str, weight_names: list[str]) -> str:
    """The layer a saved weight belongs to: the group's own layer, or, in a nested model's
    group (weights of several layers, named "inner/kernel:0"), the inner layer it names."""
    prefixes = {name.rsplit("/", 1)[0] for name in weight_names if "/" in name}
    if len(prefixes) <= 1:
        return layer_name
    owner = weight_name.rsplit("/", 1)[0]
    return owner[len(layer_name) + 1 :] if owner.startswith(layer_name + "/") else owner


def _names(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def rebuild(config: dict, input_size: int = PREPROCESSING.input_size):
    """A Keras 3 model with the graph ``config`` describes (Keras 2 format), for square
    RGB inputs of ``input_size``; weights are not set (see :func:`set_weights`)."""
    import keras

    if config.get("class_name") not in ("Functional", "Model") or "layers" not in config.get("config", {}):
        raise SeedImportError(f"not a functional model (class {config.get('class_name')!r})")
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    return _graph(config["config"], [inputs], keras)


def _graph(graph: dict, inputs: list, keras):
    """Build ``graph``'s layers on ``inputs`` (one per input layer) and return the keras.Model."""
    input_names = [entry[0] for entry in graph["input_layers"]]
    if len(input_names) != len(inputs):
        raise SeedImportError(f"model {graph.get('name')!r} has {len(input_names)} inputs; one image input expected")
    tensors = dict(zip(input_names, inputs))
    pending = [layer for layer in graph["layers"] if layer["name"] not in tensors]
    while pending:
        progressed = False
        for layer in list(pending):
            sources = _inbound(layer)
            if not all(source in tensors for source in sources):
                continue
            arguments = [tensors[source] for source in sources]
            tensors[layer["name"]] = _layer(layer, keras)(arguments[0] if len(arguments) == 1 else arguments)
            pending.remove(layer)
            progressed = True
        if not progressed:
            raise SeedImportError("the graph's layers cannot be connected: " + ", ".join(l["name"] for l in pending))
    outputs = [tensors[entry[0]] for entry in graph["output_layers"]]
    if len(outputs) != 1:
        raise SeedImportError(f"model {graph.get('name')!r} has {len(outputs)} outputs; one embedding expected")
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0], name=graph.get("name"))


def _inbound(layer: dict) -> list[str]:
    """The names of the layers feeding ``layer`` (Keras 2: ``[[[name, node, tensor, kwargs], ...]]``)."""
    nodes = layer.get("inbound_nodes", [])
    if len(nodes) != 1 or not isinstance(nodes[0], list):
        raise SeedImportError(f"layer {layer['name']!r}: {len(nodes)} inbound nodes in a format not rebuilt "
                              "(shared layers are not part of the seed's model)")
    sources = []
    for entry in nodes[0]:
        if not isinstance(entry, list) or len(entry) < 3 or entry[1] != 0 or entry[2] != 0:
            raise SeedImportError(f"layer {layer['name']!r}: an input {entry!r} not rebuilt")
        sources.append(str(entry[0]))
    return sources


def _layer(layer: dict, keras):
    """One Keras 3 layer for one Keras 2 layer config, or a refusal naming it."""
    kind, name, settings = layer["class_name"], layer["name"], dict(layer.get("config", {}))
    if kind not in LAYERS:
        raise SeedImportError(f"layer {name!r} of class {kind} is not rebuilt (only {', '.join(LAYERS)})")
    if kind in ("Functional", "Model"):
        nested = keras.Input(shape=(None, None, 3))
        return _graph(settings, [nested], keras)
    if kind == "Lambda":
        if not _is_l2_normalisation(settings):
            raise SeedImportError(f"Lambda layer {name!r} is not an L2 normalisation; its code is never run, so "
                                  "it cannot be imported")
        return keras.layers.UnitNormalization(axis=-1, name=name)
    cls = getattr(keras.layers, kind)
    accepted = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable"}
    kept = {key: value for key, value in settings.items() if key in accepted and not key.endswith(
        ("_initializer", "_regularizer", "_constraint"))}  # weights are loaded; these never matter
    if isinstance(kept.get("axis"), list) and len(kept["axis"]) == 1:  # Keras 2 batch norm: axis [3]
        kept["axis"] = kept["axis"][0]
    kept["dtype"] = "float32"
    try:
        return cls(**kept)
    except (TypeError, ValueError) as exc:
        raise SeedImportError(f"layer {name!r} ({kind}) cannot be rebuilt: {exc}") from None


def _is_l2_normalisation(settings: dict) -> bool:
    """The Lambda's function names l2_normalize: looked up in its bytecode's bytes, not run."""
    function = settings.get("function")
    if settings.get("function_type") == "lambda" and isinstance(function, list) and function:
        try:
            code = base64.b64decode(str(function[0]).encode("ascii"), validate=False)
        except (ValueError, TypeError):
            return False
        return b"l2_normalize" in code
    return isinstance(function, str) and "l2_normalize" in function


def set_weights(model, weights: dict[str, list[np.ndarray]]) -> int:
    """Load ``weights`` into every layer of ``model`` (nested models too) by layer name;
    returns the number of arrays set. A layer with weights but none saved is an error."""
    count = 0
    for layer in _all_layers(model):
        if not layer.weights:
            continue
        saved = weights.get(layer.name)
        if saved is None:
            raise SeedImportError(f"no saved weights for layer {layer.name!r}")
        try:
            layer.set_weights(saved)
        except ValueError as exc:
            raise SeedImportError(f"layer {layer.name!r}: saved weights do not fit ({exc})") from None
        count += len(saved)
    return count


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer


def read_labels(path: str | Path, dim: int) -> tuple[list[str], np.ndarray]:
    """The seed's ``labels.json``: names and a float32 (n, dim) table."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SeedImportError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(document, dict) or not document:
        raise SeedImportError(f"{path}: expected an object mapping each label to its embedding")
    names = [str(name) for name in document]
    try:
        table = np.asarray([document[name] for name in document], dtype=np.float32)
    except (TypeError, ValueError):
        raise SeedImportError(f"{path}: every label needs a list of {dim} numbers") from None
    if table.ndim != 2 or table.shape[1] != dim:
        raise SeedImportError(f"{path}: label embeddings have shape {table.shape}; the model gives {dim} values")
    if not np.all(np.isfinite(table)):
        raise SeedImportError(f"{path}: label embeddings hold NaN or infinite values")
    return names, table


def import_seed(h5_path: str | Path, labels_path: str | Path, out: str | Path) -> Path:
    """Turn the seed's two files into a bundle in ``out`` (written whole, then moved in)."""
    import shutil

    from ..encoder import TfliteEncoder

    config, weights = read_h5(h5_path)
    model = rebuild(config)
    set_weights(model, weights)
    dim = int(model.output_shape[-1])
    names, table = read_labels(labels_path, dim)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".import-") as staging:
        staging = Path(staging)
        export_tflite(model, staging / ENCODER_FILE, float16=False)
        check_unit_length(TfliteEncoder(staging / ENCODER_FILE, num_threads=1))
        label_table = LabelTable(names, names, table, bias=-np.sum(table**2, axis=1) / 4.0)
        written = label_table.save(staging, embeddings_dtype=np.float32)
        write_config(staging, {
            "name": "seed",
            "kind": "embedding",
            "description": f"the original app's model: MobileNetV2 -> {dim}-d unit embedding, {len(names)} labels; "
                           "scores are its similarity 1 - d^2/4, not probabilities",
            "source": f"imported from {Path(h5_path).name} and {Path(labels_path).name} (FastImageClassification v0.1)",
            "encoder": {"tflite": ENCODER_FILE, "embedding_dim": dim, "preprocessing": PREPROCESSING.to_config()},
            # 1 - ||e - l||^2 / 4 = 0.5 e.l + 0.75 - ||l||^2 / 4 for a unit e: the bias holds -||l||^2 / 4.
            "scoring": {"activation": "identity", "normalize": False, "scale": 0.5, "offset": 0.75},
            "ranking": {"order": "score"},
            "files": {name: None for name in [ENCODER_FILE, *written]},
        })
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(staging), str(out))
    out.chmod(0o755)
    return out


def check_unit_length(encoder) -> None:
    """The seed's embeddings are unit vectors; a model that gives others is not its model."""
    rng = np.random.default_rng(0)
    side = encoder.input_size
    ramp = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    probes = np.stack([np.broadcast_to(ramp[None, :, None] * ramp[:, None, None], (side, side, 3)),  # smooth, like a photo
                       rng.uniform(-1, 1, (side, side, 3)).astype(np.float32)])
    norms = np.linalg.norm(encoder.encode(probes), axis=1)
    if not np.all(np.abs(norms - 1.0) < UNIT_TOLERANCE) or not all(math.isfinite(n) for n in norms):
        raise SeedImportError(f"the model's embeddings are not unit length (norms {np.round(norms, 4).tolist()})")
