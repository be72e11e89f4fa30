"""Scene tags: the head is rebuilt from its shipped data and agrees with the built-in bundle, that
data is the encoder's view of real photos, and real scene photos the head never saw (the
held-out part of the scenes dev set that GCompris ships) get their scene tags, in the keyword
hierarchy and in search."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from image_tag_suggestion import ImagePredictor, LabelPredictor
from image_tag_suggestion.bundle import load_bundle
from image_tag_suggestion.conversion.qt_resources import read_qt_resources
from image_tag_suggestion.conversion.scene_tags import (fit_head, load_data, read_vocabulary, targets,
                                                        with_scene_head)

REPO = Path(__file__).resolve().parents[1]
SCENE_LABELS = REPO / "benchmarks" / "scenes_labels.csv"
GCOMPRIS = Path("/usr/share/gcompris-qt/rcc")


def gcompris_photo(key: str, resources: dict) -> bytes:
    """A photo inside GCompris' resource files, by the dev sets' key ``gcompris:BUNDLE/PATH``."""
    bundle, inside = key.split(":", 1)[1].split("/", 1)
    if bundle not in resources:
        resources[bundle] = read_qt_resources(GCOMPRIS / f"{bundle}.rcc")
    inside = inside.replace("__", "/")
    [data] = [data for name, data in resources[bundle].items() if name.endswith("/" + inside)]
    return data


@pytest.fixture(scope="module")
def held_out_gcompris(tmp_path_factory) -> list[tuple[Path, dict]]:
    """GCompris' labelled scene photos that are not in the head's data: it never saw them."""
    _, _, tuning = load_data()
    with open(SCENE_LABELS, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["photo"].startswith("gcompris:") and r["photo"] not in tuning]
    folder, resources, photos = tmp_path_factory.mktemp("scenes"), {}, []
    for row in rows:
        path = folder / row["photo"].split("/")[-1]
        path.write_bytes(gcompris_photo(row["photo"], resources))
        photos.append((path, row))
    return photos


def test_a_word_brings_its_parents():
    vocabulary = read_vocabulary()
    words = [w.word for w in vocabulary]
    row = targets([["beach"]], vocabulary)[0]
    assert {words[i] for i in row.nonzero()[0]} == {"beach", "coast", "landscape"}


def test_the_head_learns_separable_scenes_and_says_probabilities():
    """Three kinds of photo as clusters in a 1280-d space: the head, fitted on 60, scores 60
    others: the right tag high, the others low, and its probabilities mean what they say."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 1280))

    def photos(n: int):
        kinds = np.arange(n) % 3
        return centres[kinds] + rng.normal(scale=1.5, size=(n, 1280)), np.eye(3, dtype=np.float32)[kinds]

    features, y = photos(60)
    weights, bias, kept, report = fit_head(features, y)
    assert list(kept) == [0, 1, 2] and report["photos"] == 60
    test_features, test_y = photos(60)
    unit = test_features / np.linalg.norm(test_features, axis=1, keepdims=True)
    scores = 1 / (1 + np.exp(-(unit @ weights.T + bias)))
    assert np.mean(scores.argmax(1) == test_y.argmax(1)) >= 0.95
    assert scores[test_y == 1].mean() > 0.8 and scores[test_y == 0].mean() < 0.2


@pytest.mark.slow
def test_the_head_rebuilt_from_its_data_agrees_with_the_built_in_bundle():
    bundle = load_bundle()
    committed = bundle.load_labels()
    vocabulary = read_vocabulary()
    features, words, _ = load_data()
    weights, bias, kept, _ = fit_head(features, targets(words, vocabulary), [w.scored for w in vocabulary])
    rebuilt = with_scene_head(LabelPredictor(bundle).labels, vocabulary, weights, bias, kept)
    assert rebuilt.head_ids == committed.head_ids and [t.name for t in rebuilt.scenes] == [t.name for t in committed.scenes]
    np.testing.assert_allclose(rebuilt.head_weights, committed.head_weights, atol=2e-3)  # stored as float16
    np.testing.assert_allclose(rebuilt.head_bias, committed.head_bias, atol=1e-4)


def test_the_heads_data_is_the_encoders_view_of_real_photos(tmp_path):
    """The shipped embeddings are what the built-in encoder makes of the photos they name
    (checked on those GCompris ships, which every test machine has): each photo's embedding is
    closest to its own row among all of them. (The dev set stores its photos as JPEGs, so the
    original files come out a little apart from the stored rows, not equal.)"""
    features, _, keys = load_data()
    chosen = [i for i, key in enumerate(keys) if key.startswith("gcompris:")][:12]
    assert len(chosen) >= 8
    resources, files = {}, []
    for i in chosen:
        files.append(tmp_path / f"{i}.webp")
        files[-1].write_bytes(gcompris_photo(keys[i], resources))
    predictor = ImagePredictor(load_bundle())
    fresh = predictor.predict_from_files(files)[:, : predictor.visual_dim]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cosine = (fresh / np.linalg.norm(fresh, axis=1, keepdims=True)) @ unit.T
    assert list(cosine.argmax(axis=1)) == chosen
    assert cosine[np.arange(len(chosen)), chosen].min() > 0.97


def test_scene_photos_the_head_never_saw_get_their_scene_tags(held_out_gcompris, default_predictors):
    image_predictor, label_predictor = default_predictors
    vocabulary = read_vocabulary()
    wnid = {w.word: w.wnid for w in vocabulary}
    scene_ids = set(label_predictor.labels.head_ids)
    assert len(held_out_gcompris) >= 8
    embeddings = image_predictor.predict_from_files([path for path, _ in held_out_gcompris])
    shown = label_predictor.predict_batch(embeddings)  # the default: likely tags only
    right = wrong = with_scene_word = 0
    for (_, row), tags in zip(held_out_gcompris, shown):
        truth = {vocabulary[i].wnid for i in targets([row["tags"].split(";")], vocabulary)[0].nonzero()[0]}
        scenes = [t for t in tags if t.id in scene_ids]
        right += sum(t.id in truth for t in scenes)
        wrong += sum(t.id not in truth for t in scenes)
        with_scene_word += any(t.id in truth and t.id != wnid.get("animal") for t in scenes)
    assert right / max(right + wrong, 1) >= 0.7
    assert with_scene_word / len(held_out_gcompris) >= 0.6


def test_scene_tags_sit_in_the_keyword_hierarchy(default_predictors):
    labels = default_predictors[1].labels
    by_name = {t.name: t for t in labels.scenes}
    child = next(t for t in labels.scenes if t.parent)
    parent_name = labels.names[labels.ids.index(child.parent)]
    assert labels.broader_chain(child.id)[-1] == parent_name
    assert by_name.get("sky") is not None and labels.broader_chain(by_name["sky"].id) == []


@pytest.mark.slow
def test_search_finds_scene_photos_by_their_words_and_synonyms(held_out_gcompris, tmp_path):
    sea = [path for path, row in held_out_gcompris if "sea" in row["tags"].split(";")]
    others = [path for path, row in held_out_gcompris if "water" not in row["tags"].split(";")][:6]
    assert sea and others
    album = tmp_path / "album"
    album.mkdir()
    for path in sea + others:
        (album / path.name).write_bytes(path.read_bytes())
    index = tmp_path / "album.sqlite"
    cli = [sys.executable, "-m", "image_tag_suggestion.cli"]
    subprocess.run([*cli, "index", str(album), "--out", str(index), "-q"], check=True, capture_output=True, timeout=300)
    for word in ("sea", "ocean"):
        found = subprocess.run([*cli, "search", str(index), word, "--format", "jsonl"], capture_output=True, text=True,
                               timeout=120)
        assert found.returncode == 0, found.stderr
        hits = {Path(json.loads(line)["file"]).name for line in found.stdout.splitlines() if line}
        assert hits and hits <= {p.name for p in sea} and len(hits) >= len(sea) // 2
