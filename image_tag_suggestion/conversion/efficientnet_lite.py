"""EfficientNet-Lite0 as a Keras model, and its ImageNet weights from a torch state dict.

Lite0 is MobileNetV2-style: inverted residual blocks, ReLU6, no squeeze-excite.
Layer names mirror the torch names (``_blocks.3._expand_conv`` becomes
``blocks_3_expand_conv``) so the weight copy is a plain lookup. Keras'
``padding="same"`` is TensorFlow's asymmetric "same", which is what the
original TF checkpoints used and efficientnet_pytorch reproduces.
"""

from __future__ import annotations

import numpy as np

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3


def _keras_name(torch_prefix: str) -> str:
    return torch_prefix.replace(".", "_").strip("_").replace("__", "_")


def build_efficientnet_lite0(input_size: int = 224, name: str = "efficientnet_lite0"):
    """Return a Keras model from normalised RGB images to pooled 1280-d features.

    Args:
        input_size: height and width of the square input (224 for ImageNet weights).
        name: the model's name.

    The classifier layer is left out on purpose: in a bundle its rows are the label
    embeddings, scored by the shared rule in ``scoring.py``.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, stride, prefix_conv, prefix_bn, act=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=_keras_name(prefix_conv))(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=_keras_name(prefix_conv))(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=_keras_name(prefix_bn))(x)
        return layers.ReLU(6.0, name=_keras_name(prefix_bn) + "_relu6")(x) if act else x

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = conv_bn(inputs, STEM_CHANNELS, 3, 2, "_conv_stem", "_bn0")
    index = 0
    for repeats, kernel, stride, expand, channels_in, channels_out in LITE0_STAGES:
        for repeat in range(repeats):
            block_in = channels_in if repeat == 0 else channels_out
            block_stride = stride if repeat == 0 else 1
            p = f"_blocks.{index}."
            shortcut = x
            if expand != 1:
                x = conv_bn(x, block_in * expand, 1, 1, p + "_expand_conv", p + "_bn0")
            x = conv_bn(x, None, kernel, block_stride, p + "_depthwise_conv", p + "_bn1", depthwise=True)
            x = conv_bn(x, channels_out, 1, 1, p + "_project_conv", p + "_bn2", act=False)
            if block_stride == 1 and block_in == channels_out:
                x = layers.Add(name=_keras_name(p + "add"))([shortcut, x])
            index += 1
    x = conv_bn(x, HEAD_CHANNELS, 1, 1, "_conv_head", "_bn1")
    outputs = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)


def load_torch_weights(model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy a torch EfficientNet-Lite0 state dict into ``model``; every tensor must be used."""
    used = set()
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        torch_prefix = _torch_prefix(layer.name)

        def take(suffix):
            key = f"{torch_prefix}.{suffix}"
            if key not in state_dict:
                raise KeyError(f"{key} missing from the state dict (for layer {layer.name})")
            used.add(key)
            return state_dict[key]

        kind = type(layer).__name__
        if kind == "Conv2D":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
            new = [take("weight").transpose(2, 3, 1, 0)]
        elif kind == "DepthwiseConv2D":  # torch (c, 1, kh, kw) -> keras (kh, kw, c, 1)
            new = [take("weight").transpose(2, 3, 0, 1)]
        elif kind == "BatchNormalization":
            new = [take("weight"), take("bias"), take("running_mean"), take("running_var")]
            used.add(f"{torch_prefix}.num_batches_tracked")
        else:
            raise TypeError(f"no weight mapping for layer {layer.name} ({kind})")
        for have, want in zip(weights, new):
            if have.shape != want.shape:
                raise ValueError(f"{layer.name}: shape {want.shape} from torch, {have.shape} in keras")
        layer.set_weights(new)
    unused = sorted(set(state_dict) - used - {"_fc.weight", "_fc.bias"})
    if unused:
        raise ValueError(f"state dict entries not used: {unused[:5]}...")


def _torch_prefix(keras_name: str) -> str:
    if keras_name.startswith("blocks_"):
        _, index, rest = keras_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{keras_name}"


def classifier_weights(state_dict: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The final layer as (label embeddings [1000, 1280], bias [1000])."""
    return state_dict["_fc.weight"].astype(np.float32), state_dict["_fc.bias"].astype(np.float32)
