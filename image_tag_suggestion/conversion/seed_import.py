"""The original app's published model -> a normal bundle, without running any of its code.

The original app (the "seed") released two files:

- ``image_representation.h5``: a Keras 2 functional model saved in the legacy HDF5 format.
  A MobileNetV2 without its top, then either max and average pooling concatenated (2,560
  values) or a Dense projection (50 in later versions), then a ``Lambda`` layer holding
  ``K.l2_normalize(x, axis=-1)`` as marshalled Python bytecode. Modern Keras refuses to
  load such a Lambda, and running bytecode from a download would run whatever it says.
- ``labels.json``: ``{"label name": [floats, one per embedding value], ...}``.

Here the graph is rebuilt from the file's ``model_config`` with real Keras layers, in three
steps, each before anything the next one allocates:

1. :func:`trace` walks the config's node references (any node of a nested model, layers
   called more than once, models nested at any depth, Keras 2 lists or Keras 3 ``args``
   dicts) into a flat list of layer calls, and keeps the image embedding: the whole model
   when it has one input and one output, else the path from the image input to the first
   L2-normalised tensor on it (the seed's training graph concatenates it with label embeddings).
2. :func:`check` sizes every tensor and weight by arithmetic on the config: only the classes
   in :data:`LAYERS`, at most :data:`MAX_PARAMETERS` parameters and :data:`MAX_VALUES` values
   in any tensor. The Lambda is accepted only when its bytecode names ``l2_normalize`` (read
   as bytes, never executed) and becomes ``UnitNormalization``.
3. :func:`read_weights` reads, with h5py, only the datasets those layers need, each checked
   first: the expected shape, a float type, its bytes stored in this file (not unwritten, not
   external or virtual storage, not behind a link), so nothing but the ``.h5`` is ever read. The result is exported to ``.tflite`` (float32) and served like any
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bundle import write_config
from ..files import check_output_folder, install_folder, staging_folder
from ..labels import LabelTable
from ..preprocessing import Preprocessing
from .export import export_tflite

ENCODER_FILE = "encoder.tflite"
PREPROCESSING = Preprocessing(input_size=224, resize=224, mean=(127.5,) * 3, std=(127.5,) * 3, resample="bicubic",
                              fit="pad")
# The layer classes a MobileNetV2 embedding model is made of; nothing else is rebuilt.
LAYERS = ("InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Activation", "ZeroPadding2D",
          "Add", "Dropout", "GlobalMaxPooling2D", "GlobalAveragePooling2D", "Concatenate", "Dense", "Lambda",
          "UnitNormalization")
MODELS = ("Functional", "Model", "Sequential")  # the class names Keras 2 and 3 give a model in a config
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "swish", "hard_sigmoid", "elu", None)
MAX_PARAMETERS = 50_000_000  # the seed's model has 2.3 M (2.9 M with its label branch)
MAX_VALUES = 16_000_000  # in any one tensor of one picture; MobileNetV2's largest holds 1.2 M
MAX_LAYER_CALLS = 5_000  # MobileNetV2 makes about 160
MAX_CONFIG_BYTES = 16_000_000
UNIT_TOLERANCE = 1e-3


class SeedImportError(ValueError):
    """The files are not the seed's model (or a layer cannot be rebuilt safely)."""


@dataclass
class Call:
    """One call of one layer: ``path`` names the layer from the outermost model down (calls of
    a shared layer share it, and its weights); tensors are numbered, the image is 0."""
    path: tuple[str, ...]
    layer: dict  # the layer's entry in model_config: class_name, config
    inputs: list[int]
    output: int


@dataclass
class Graph:
    calls: list[Call] = field(default_factory=list)  # each after the calls making its inputs
    inputs: dict[int, list] = field(default_factory=dict)  # tensor -> the model input's declared shape
    output: int = -1


def read_config(h5) -> dict:
    """``model_config`` from an open h5py file, its size checked before it is read."""
    if "model_config" not in h5.attrs:
        raise SeedImportError("no model_config inside (weights only?); the seed's file holds a whole model")
    if h5.attrs.get_id("model_config").get_storage_size() > MAX_CONFIG_BYTES:
        raise SeedImportError(f"model_config is over {MAX_CONFIG_BYTES // 1_000_000} MB; the seed's is 100 kB")
    config = h5.attrs["model_config"]
    try:
        config = json.loads(config.decode("utf-8") if isinstance(config, bytes) else str(config))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SeedImportError("model_config is not JSON") from None
    if not isinstance(config, dict) or config.get("class_name") not in MODELS or not isinstance(config.get("config"),
                                                                                                 dict):
        raise SeedImportError(f"not a Keras model (class {config.get('class_name') if isinstance(config, dict) else config!r})")
    return config


def trace(config: dict) -> Graph:
    """The calls that make the image embedding (see the module), from a whole model_config."""
    graph = Graph()
    top = config["config"]
    names = [ref[0] for ref in _refs(top.get("input_layers", []))] if config["class_name"] != "Sequential" else [None]
    for tensor, name in enumerate(names):
        graph.inputs[tensor] = _input_shape(top, name)
    outputs = _trace_model(config, list(graph.inputs), (), graph)
    images = [t for t, shape in graph.inputs.items() if len(names) == 1 or (len(shape) == 4 and shape[-1] == 3)]
    if len(images) != 1:
        raise SeedImportError(f"the model has {len(names)} inputs and {len(images)} of them are (height, width, 3) "
                              "pictures; one image input expected")
    if images != [0]:  # the image is tensor 0 from here on
        swap = {0: images[0], images[0]: 0}
        for call in graph.calls:
            call.inputs = [swap.get(t, t) for t in call.inputs]
            call.output = swap.get(call.output, call.output)
        outputs = [swap.get(t, t) for t in outputs]
    graph.output = outputs[0] if len(names) == 1 and len(outputs) == 1 else _first_normalised(graph)
    _keep_ancestors(graph)
    return graph


def _trace_model(model: dict, inputs: list[int], prefix: tuple[str, ...], graph: Graph) -> list[int]:
    """Call the model ``model`` (a config entry) on tensors ``inputs``; returns its output tensors.

    A node reference (layer, node index, tensor index) is resolved by calling that layer's node
    once, on its own resolved references (nested models recurse here with the outer tensors as
    their inputs). References are first turned into positions in the layer's ``inbound_nodes``:
    Keras 2 (and Keras 3's input/output lists) count a nested model's own node 0, which links
    its inputs and is not in the config, so its first call there is node 1; the tensors in
    Keras 3's ``args`` count calls only."""
    kind, body = model.get("class_name"), model.get("config")
    if kind == "Sequential":
        return _trace_sequential(body, inputs, prefix, graph)
    layers = {entry["name"]: entry for entry in body["layers"]}
    input_names = [ref[0] for ref in _refs(body["input_layers"])]
    if len(input_names) != len(inputs):
        raise SeedImportError(f"model {'/'.join(prefix) or body.get('name')!r} takes {len(input_names)} inputs, "
                              f"is given {len(inputs)}")
    made: dict[tuple[str, int], list[int]] = {(name, 0): [t] for name, t in zip(input_names, inputs)}

    def positions(refs: list[tuple[str, int, int]], calls_only: bool) -> list[tuple[str, int, int]]:
        return [(n, i if calls_only else i - _first_node(layers.get(n, {})), t) for n, i, t in refs]

    def node(name: str, position: int) -> list[tuple[str, int, int]]:
        entry = layers.get(name)
        if entry is None or entry.get("class_name") == "InputLayer":
            raise SeedImportError(f"a reference to {name!r}, which is not a layer or an input of "
                                  f"model {body.get('name')!r}")
        nodes = entry.get("inbound_nodes") or []
        if not 0 <= position < len(nodes):
            raise SeedImportError(f"layer {name!r}: call {position + 1} is referred to, and it has {len(nodes)}")
        return positions(*_node_refs(nodes[position]))

    def resolve(name: str, index: int, tensor: int) -> int:
        stack, expanded = [(name, index)], set()
        while stack:
            key = stack[-1]
            if key in made:
                stack.pop()
                continue
            refs = node(*key)
            missing = [(n, i) for n, i, _ in refs if (n, i) not in made]
            if missing:
                if key in expanded:
                    raise SeedImportError(f"layer {key[0]!r}: its inputs depend on its own output")
                expanded.add(key)
                stack.extend(missing)
                continue
            sources = []
            for n, i, t in refs:
                if not 0 <= t < len(made[(n, i)]):
                    raise SeedImportError(f"layer {key[0]!r}: input {t} of {n!r} node {i} does not exist")
                sources.append(made[(n, i)][t])
            made[key] = _call(layers[key[0]], sources, prefix, graph)
            stack.pop()
        if not 0 <= tensor < len(made[(name, index)]):
            raise SeedImportError(f"output {tensor} of {name!r} does not exist")
        return made[(name, index)][tensor]

    return [resolve(*ref) for ref in positions(_refs(body["output_layers"]), calls_only=False)]


def _trace_sequential(body, inputs: list[int], prefix: tuple[str, ...], graph: Graph) -> list[int]:
    entries = body["layers"] if isinstance(body, dict) else body  # Keras 2.2 wrote the list alone
    tensor = inputs[0]
    for entry in entries:
        if entry.get("class_name") != "InputLayer":
            if "name" not in entry:
                entry = {**entry, "name": entry["config"]["name"]}
            tensor = _call(entry, [tensor], prefix, graph)[0]
    return [tensor]


def _call(entry: dict, inputs: list[int], prefix: tuple[str, ...], graph: Graph) -> list[int]:
    """Record one call of the layer ``entry`` (recursing into a nested model); its outputs."""
    path = (*prefix, str(entry["name"]))
    if entry.get("class_name") in MODELS:
        return _trace_model(entry, inputs, path, graph)
    if len(graph.calls) >= MAX_LAYER_CALLS:
        raise SeedImportError(f"over {MAX_LAYER_CALLS} layer calls; the seed's model makes about 160")
    output = len(graph.inputs) + len(graph.calls)
    graph.calls.append(Call(path, entry, inputs, output))
    return [output]


def _refs(value) -> list[tuple[str, int, int]]:
    """``input_layers``/``output_layers``: ``[[name, node, tensor], ...]`` (Keras 3 may write one
    reference alone, ``[name, node, tensor]``)."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = [value]
    return [(str(ref[0]), int(ref[1]), int(ref[2])) for ref in value]


def _node_refs(node) -> tuple[list[tuple[str, int, int]], bool]:
    """One inbound node's references, and whether they count calls only: Keras 2
    ``[[name, node, tensor, kwargs], ...]``; Keras 3 ``{"args": [...], "kwargs": {...}}`` with
    each tensor a dict holding ``keras_history``."""
    if isinstance(node, list):
        return [(str(ref[0]), int(ref[1]), int(ref[2])) for ref in node], False
    found: list[tuple[str, int, int]] = []

    def walk(value):
        if isinstance(value, dict):
            history = value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
            if history is not None:
                found.append((str(history[0]), int(history[1]), int(history[2])))
            else:
                for item in value.values():
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(node["args"])
    return found, True


def _first_node(entry: dict) -> int:
    """The config's index of a layer's first call: 1 for a model built on its own inputs."""
    kind, body = entry.get("class_name"), entry.get("config")
    if kind in ("Functional", "Model"):
        return 1
    if kind == "Sequential":
        layers = body["layers"] if isinstance(body, dict) else body
        first = layers[0] if layers else {}
        settings = first.get("config", {})
        return int(first.get("class_name") == "InputLayer" or "batch_input_shape" in settings or "batch_shape" in settings)
    return 0


def _input_shape(body: dict, name) -> list:
    """A model input's declared shape, batch included (``batch_input_shape``: Keras 2;
    ``batch_shape``: Keras 3); [] when it is not declared."""
    for entry in body.get("layers", []) if isinstance(body, dict) else body:
        if name is None or entry.get("name") == name:
            settings = entry.get("config", {})
            shape = settings.get("batch_input_shape") or settings.get("batch_shape") or []
            return list(shape) if isinstance(shape, list) else []
    return []


def _is_normalisation(call: Call) -> bool:
    kind = call.layer.get("class_name")
    return kind == "UnitNormalization" or (kind == "Lambda" and _is_l2_normalisation(call.layer.get("config", {})))


def _first_normalised(graph: Graph) -> int:
    """The first L2-normalised tensor computed from the image: the embedding of a graph that
    also computes other things (the seed's training graph: image and two labels)."""
    from_image, after = {0}, set()
    found = []
    for call in graph.calls:
        if any(t in from_image for t in call.inputs):
            from_image.add(call.output)
            if any(t in after for t in call.inputs):
                after.add(call.output)
            elif _is_normalisation(call):
                found.append(call)
                after.add(call.output)
    if len(found) != 1:
        raise SeedImportError(f"the model has several inputs or outputs and {len(found)} first L2 normalisations of "
                              "its image input; one image embedding expected")
    return found[0].output


def _keep_ancestors(graph: Graph) -> None:
    """Drop the calls the embedding does not need; it must need the image input alone."""
    needed, kept = {graph.output}, []
    for call in reversed(graph.calls):
        if call.output in needed:
            needed.update(call.inputs)
            kept.append(call)
    graph.calls = kept[::-1]
    others = sorted(t for t in needed if t in graph.inputs and t != 0)
    if others:
        raise SeedImportError(f"the image embedding needs the model's other inputs too ({len(others)}); not rebuilt")


def check(graph: Graph, input_size: int = PREPROCESSING.input_size) -> dict[tuple[str, ...], list[tuple[str, tuple]]]:
    """Every call's layer class and settings, and the size of every tensor and weight, by
    arithmetic on the config (no Keras, nothing allocated); returns each layer's weights,
    ``{path: [(name, shape), ...]}`` in Keras' order."""
    shapes: dict[int, tuple[int, ...]] = {0: (input_size, input_size, 3)}
    weights: dict[tuple[str, ...], list[tuple[str, tuple]]] = {}
    total = 0
    for call in graph.calls:
        name, kind = call.path[-1], call.layer.get("class_name")
        if kind not in LAYERS or kind == "InputLayer":
            raise SeedImportError(f"layer {name!r} of class {kind} is not rebuilt (only {', '.join(LAYERS)})")
        if kind == "Lambda" and not _is_l2_normalisation(call.layer.get("config", {})):
            raise SeedImportError(f"Lambda layer {name!r} is not an L2 normalisation; its code is never run, so "
                                  "it cannot be imported")
        settings = call.layer.get("config") or {}
        try:
            shape, own = _sizes(kind, settings, [shapes[t] for t in call.inputs])
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise SeedImportError(f"layer {name!r} ({kind}): settings not rebuilt ({exc})") from None
        if call.path not in weights:
            weights[call.path] = own
            total += sum(math.prod(s) for _, s in own)
        elif weights[call.path] != own:
            raise SeedImportError(f"layer {name!r} is called on inputs of different sizes")
        if total > MAX_PARAMETERS:
            raise SeedImportError(f"the model declares over {total:,} parameters (at layer {name!r}); at most "
                                  f"{MAX_PARAMETERS // 1_000_000} M are imported (the seed's has 2.3 M)")
        if math.prod(shape) > MAX_VALUES:
            raise SeedImportError(f"layer {name!r} makes {math.prod(shape):,} values per picture {shape}; at most "
                                  f"{MAX_VALUES:,} are allowed")
        shapes[call.output] = shape
    return weights


def _sizes(kind: str, s: dict, inputs: list[tuple[int, ...]]) -> tuple[tuple[int, ...], list[tuple[str, tuple]]]:
    """(output shape, [(weight name, shape)]) of one Keras layer on inputs of these shapes
    (one picture, channels last)."""
    if s.get("data_format") not in (None, "channels_last") or s.get("activation") not in ACTIVATIONS:
        raise ValueError(f"data_format {s.get('data_format')!r}, activation {s.get('activation')!r}")
    if kind == "Add":
        if len(inputs) < 2 or len(set(inputs)) != 1:
            raise ValueError(f"inputs of shapes {inputs}")
        return inputs[0], []
    if kind == "Concatenate":
        if len(inputs) < 2 or len({x[:-1] for x in inputs}) != 1 or _int(s.get("axis", -1), -8) not in (
                -1, len(inputs[0])):
            raise ValueError(f"inputs of shapes {inputs} joined on axis {s.get('axis')}")
        return (*inputs[0][:-1], sum(x[-1] for x in inputs)), []
    if len(inputs) != 1:
        raise ValueError(f"{len(inputs)} inputs")
    shape = inputs[0]
    channels = shape[-1]
    if kind in ("ReLU", "Activation", "Dropout", "Lambda", "UnitNormalization"):
        return shape, []
    if kind == "BatchNormalization":
        axis = s.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if _int(axis, -8) not in (-1, len(shape)):
            raise ValueError(f"axis {axis}")
        own = [(n, (channels,)) for n, on in (("gamma", s.get("scale", True)), ("beta", s.get("center", True))) if on]
        return shape, own + [("moving_mean", (channels,)), ("moving_variance", (channels,))]
    if kind == "Dense":
        units = _int(s["units"])
        return (*shape[:-1], units), [("kernel", (channels, units))] + ([("bias", (units,))] if s.get("use_bias", True) else [])
    if len(shape) != 3:
        raise ValueError(f"input of shape {shape}; a picture's (height, width, channels) expected")
    height, width = shape[:2]
    if kind in ("GlobalMaxPooling2D", "GlobalAveragePooling2D"):
        return ((1, 1, channels) if s.get("keepdims") else (channels,)), []
    if kind == "ZeroPadding2D":
        (top, bottom), (left, right) = _pairs(s.get("padding", 1))
        return (height + top + bottom, width + left + right, channels), []
    kernel, strides, dilation = _pair(s["kernel_size"]), _pair(s.get("strides", 1)), _pair(s.get("dilation_rate", 1))
    sides = []
    for size, k, stride, rate in zip((height, width), kernel, strides, dilation):
        if s.get("padding", "valid") == "same":
            sides.append(-(-size // stride))
        elif s.get("padding", "valid") == "valid":
            sides.append((size - rate * (k - 1) - 1) // stride + 1)
        else:
            raise ValueError(f"padding {s.get('padding')!r}")
    if min(sides) < 1:
        raise ValueError(f"no output left from {shape}")
    if kind == "DepthwiseConv2D":
        filters = channels * _int(s.get("depth_multiplier", 1))
        own = [("depthwise_kernel", (*kernel, channels, filters // channels))]
    else:
        filters, groups = _int(s["filters"]), _int(s.get("groups", 1))
        if channels % groups or filters % groups:
            raise ValueError(f"groups {groups}")
        own = [("kernel", (*kernel, channels // groups, filters))]
    return (*sides, filters), own + ([("bias", (filters,))] if s.get("use_bias", True) else [])


def _int(value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1_000_000_000:
        raise ValueError(f"{value!r} where a whole number is expected")
    return value


def _pair(value) -> tuple[int, int]:
    values = [value, value] if isinstance(value, int) else list(value)
    if len(values) != 2:
        raise ValueError(f"{value!r} where two numbers are expected")
    return _int(values[0]), _int(values[1])


def _pairs(value) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(value, int):
        value = [value, value]
    rows = [[v, v] if isinstance(v, int) else list(v) for v in value]
    if len(rows) != 2 or any(len(r) != 2 for r in rows):
        raise ValueError(f"padding {value!r}")
    return tuple((_int(a, 0), _int(b, 0)) for a, b in rows)


def read_weights(h5, weights: dict[tuple[str, ...], list[tuple[str, tuple]]]) -> dict[tuple[str, ...], list[np.ndarray]]:
    """The arrays the layers need, ``{path: [arrays in Keras' order]}``, from an open h5py
    file. Each dataset is checked before it is read (see the module)."""
    root = _child(h5, "model_weights", "the file's weights") if "model_weights" in h5 else h5
    arrays = {}
    for path, expected in weights.items():
        if not expected:
            continue
        where = repr(path[-1]) + (f" (in {'/'.join(path[:-1])})" if len(path) > 1 else "")
        group = _child(root, path[0], f"layer {where}")
        saved: dict[str, list[str]] = {}
        for weight_name in _names(group.attrs.get("weight_names", [])):
            parts = weight_name.split("/")
            if len(path) == 1 or (len(parts) > 1 and parts[-2] == path[-1]):  # a nested layer's: ".../inner/kernel:0"
                saved.setdefault(parts[-1].split(":")[0], []).append(weight_name)
        arrays[path] = []
        for slot, shape in expected:
            found = saved.get(slot, [])
            if len(found) != 1:
                raise SeedImportError(f"layer {where}: {len(found)} saved weights named {slot!r}; one expected")
            arrays[path].append(_read_dataset(group, found[0], shape, f"layer {where}: weight {found[0]!r}"))
    return arrays


def _child(group, name: str, what: str):
    """``group[name]`` when it is stored in this file (HDF5 links can name other files)."""
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        raise SeedImportError(f"{what}: nothing saved under {name!r}")
    if not isinstance(link, h5py.HardLink):
        raise SeedImportError(f"{what}: {name!r} is a link ({type(link).__name__}), not data in this file")
    return group[name]


def _read_dataset(group, weight_name: str, shape: tuple, what: str) -> np.ndarray:
    import h5py

    node = group
    for part in weight_name.split("/"):
        node = _child(node, part, what)
    if not isinstance(node, h5py.Dataset):
        raise SeedImportError(f"{what}: not a dataset")
    if node.shape != tuple(shape):
        raise SeedImportError(f"{what} has shape {node.shape}; the layer's config makes it {tuple(shape)}")
    if node.dtype.kind != "f" or node.dtype.itemsize not in (2, 4, 8):
        raise SeedImportError(f"{what} holds {node.dtype}, not floats")
    if node.external or node.is_virtual:
        raise SeedImportError(f"{what} is stored in another file (HDF5 {'external' if node.external else 'virtual'} "
                              "storage); only data inside the .h5 is read")
    if node.id.get_create_plist().get_nfilters():
        raise SeedImportError(f"{what} is compressed or filtered; Keras never writes weights so")
    stored, size = node.id.get_storage_size(), node.size * node.dtype.itemsize
    if stored != size:
        raise SeedImportError(f"{what} holds no data" if stored == 0 else f"{what} holds {stored} bytes of {size}")
    return np.asarray(node[()], dtype=np.float32)


def _names(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def load_model(h5_path: str | Path, input_size: int = PREPROCESSING.input_size):
    """The seed's image embedding as a Keras 3 model for square RGB inputs of ``input_size``,
    rebuilt from the file (traced, checked and its weights read before anything is built)."""
    import h5py

    try:
        with h5py.File(h5_path, "r") as h5:
            config = read_config(h5)
            version = _names([h5.attrs.get("keras_version", b"unknown")])[0]
            try:
                graph = trace(config)
            except (TypeError, KeyError, ValueError, AttributeError, IndexError, RecursionError) as exc:
                if isinstance(exc, SeedImportError):
                    raise
                raise SeedImportError(f"model_config written by Keras {version} in a form not understood "
                                      f"({type(exc).__name__}: {exc})") from None
            weights = check(graph, input_size)
            arrays = read_weights(h5, weights)
    except OSError as exc:
        raise SeedImportError(f"{h5_path}: not a readable HDF5 file ({exc})") from None
    return build(graph, arrays, input_size)


def build(graph: Graph, arrays: dict[tuple[str, ...], list[np.ndarray]], input_size: int = PREPROCESSING.input_size):
    """A Keras 3 model making the calls of a checked ``graph``, with the weights read for it."""
    import keras

    layers: dict[tuple[str, ...], object] = {}
    used: set[str] = set()
    tensors = {0: keras.Input(shape=(input_size, input_size, 3), name="image")}
    for call in graph.calls:
        layer = layers.get(call.path)
        if layer is None:
            name = call.path[-1] if call.path[-1] not in used else "_".join(call.path)
            used.add(name)
            layer = layers[call.path] = _layer(call.layer, name, keras)
        sources = [tensors[t] for t in call.inputs]
        tensors[call.output] = layer(sources if call.layer["class_name"] in ("Add", "Concatenate") else sources[0])
    model = keras.Model(tensors[0], tensors[graph.output], name="seed")
    for path, layer in layers.items():
        if path in arrays:
            try:
                layer.set_weights(arrays[path])
            except ValueError as exc:
                raise SeedImportError(f"layer {path[-1]!r}: saved weights do not fit ({exc})") from None
    return model


def _layer(entry: dict, name: str, keras):
    """One Keras 3 layer for one checked Keras 2 (or 3) layer config."""
    kind, settings = entry["class_name"], dict(entry.get("config") or {})
    if kind in ("Lambda", "UnitNormalization"):
        return keras.layers.UnitNormalization(axis=-1, name=name)
    cls = getattr(keras.layers, kind)
    accepted = set(inspect.signature(cls.__init__).parameters) | {"trainable"}
    kept = {key: value for key, value in settings.items() if key in accepted and not key.endswith(
        ("_initializer", "_regularizer", "_constraint"))}  # weights are loaded; these never matter
    if isinstance(kept.get("axis"), list) and len(kept["axis"]) == 1:  # Keras 2 batch norm: axis [3]
        kept["axis"] = kept["axis"][0]
    kept.update(name=name, dtype="float32")
    try:
        return cls(**kept)
    except (TypeError, ValueError) as exc:
        raise SeedImportError(f"layer {name!r} ({kind}) cannot be rebuilt: {exc}") from None


def _is_l2_normalisation(settings: dict) -> bool:
    """The Lambda's function names l2_normalize: looked up in its bytecode's bytes, not run
    (Keras 2 writes ``[code, defaults, closure]``; Keras 3 ``{"class_name": "__lambda__", "config":
    {"code": ...}}``)."""
    function = settings.get("function")
    if isinstance(function, dict) and function.get("class_name") == "__lambda__":
        function, kind = [function.get("config", {}).get("code")], "lambda"
    else:
        kind = settings.get("function_type")
    if kind == "lambda" and isinstance(function, list) and function:
        try:
            code = base64.b64decode(str(function[0]).encode("ascii"), validate=False)
        except (ValueError, TypeError):
            return False
        return b"l2_normalize" in code
    return isinstance(function, str) and "l2_normalize" in function


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


def import_seed(h5_path: str | Path, labels_path: str | Path, out: str | Path, force: bool = False) -> Path:
    """Turn the seed's two files into a bundle in ``out``: built beside it, then moved in. An
    ``out`` holding files that are not a bundle's is refused first, unless ``force``."""
    from ..encoder import TfliteEncoder

    check_output_folder(out, force)
    model = load_model(h5_path)
    dim = int(model.output_shape[-1])
    names, table = read_labels(labels_path, dim)
    out = Path(out)
    with staging_folder(out) as staging:
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
        install_folder(staging, out, force)
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
