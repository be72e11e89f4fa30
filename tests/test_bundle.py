"""Bundles: load and validate, refuse corruption, download with sha256 checks from a local server."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from image_tag_suggestion import BundleError, ImagePredictor, LabelPredictor, load_bundle
from image_tag_suggestion.bundle import download_bundle

from .conftest import make_photo_like


def copy_bundle(source, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(source, target)
    return target


def test_tiny_bundle_serves_through_the_seed_api(tiny_bundle):
    image_predictor = ImagePredictor.init_from_config_path(tiny_bundle / "config.yaml")
    label_predictor = LabelPredictor.init_from_config_path(tiny_bundle)
    pred, pixels = image_predictor.predict_from_file(__import__("io").BytesIO(_png(make_photo_like(0))))
    assert pred.shape == (8,) and pixels.shape == (240, 320, 3)
    assert np.linalg.norm(pred) == pytest.approx(1.0, abs=1e-4)  # the model ends in UnitNormalization
    frame = label_predictor.predict_dataframe_from_array(pred)
    assert list(frame.columns) == ["label", "scores", "likely"]
    assert len(frame) == 6 and set(frame["label"]) == {"red", "green", "blue", "dark", "light", "colour"}
    batch = image_predictor.predict_from_arrays([make_photo_like(1), make_photo_like(2)])
    np.testing.assert_allclose(batch[0], image_predictor.predict_from_array(make_photo_like(1)), atol=1e-5)


def _png(pixels):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_pointer_config_is_followed(tiny_bundle, tmp_path):
    pointer = tmp_path / "config.yaml"
    pointer.write_text(f"bundle: {tiny_bundle}\n")
    assert load_bundle(pointer).folder == tiny_bundle


def test_corrupted_file_is_refused(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    data = bytearray((bundle / "encoder.tflite").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "encoder.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="encoder.tflite does not match its sha256"):
        load_bundle(bundle)


def test_missing_file_and_bad_config_are_explained(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    (bundle / "labels.json").unlink()
    with pytest.raises(BundleError, match="missing file labels.json"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "elsewhere")
    config = yaml.safe_load((tiny_bundle / "config.yaml").read_text())
    config["scoring"]["activation"] = "tanh"
    (bundle / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(BundleError, match="activation"):
        load_bundle(bundle)


def test_dimension_mismatch_is_explained(tiny_bundle, tmp_path):
    from image_tag_suggestion.bundle import write_config

    bundle = copy_bundle(tiny_bundle, tmp_path)
    config = yaml.safe_load((bundle / "config.yaml").read_text())
    config["encoder"]["embedding_dim"] = 16
    write_config(bundle, config)
    loaded = load_bundle(bundle)
    with pytest.raises(BundleError, match="8 dimensions"):
        loaded.load_labels()
    with pytest.raises(BundleError, match="to 8 dimensions"):
        loaded.load_encoder()


def test_download_from_local_server_verifies_and_caches(tiny_bundle, served, tmp_path):
    root, base = served
    shutil.copytree(tiny_bundle, root / "tiny")
    cache = tmp_path / "cache"
    image_predictor = ImagePredictor.init_from_config_url(f"{base}/tiny/config.yaml", cache_dir=cache)
    label_predictor = LabelPredictor.init_from_config_url(f"{base}/tiny/config.yaml", cache_dir=cache)
    local = ImagePredictor.init_from_config_path(tiny_bundle)
    pixels = make_photo_like(5)
    np.testing.assert_allclose(image_predictor.predict_from_array(pixels), local.predict_from_array(pixels), atol=1e-6)
    assert len(label_predictor.predict_from_array(image_predictor.predict_from_array(pixels))) == 6
    # The second download reuses verified files: remove the server's copy, it must still work.
    (root / "tiny" / "encoder.tflite").unlink()
    assert download_bundle(f"{base}/tiny/config.yaml", cache_dir=cache).is_dir()


def test_download_refuses_a_tampered_file(tiny_bundle, served, tmp_path):
    root, base = served
    shutil.copytree(tiny_bundle, root / "tiny")
    with open(root / "tiny" / "label_embeddings.npy", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x80\x7f")
    with pytest.raises(BundleError, match="sha256 .* does not match"):
        download_bundle(f"{base}/tiny/config.yaml", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("label_embeddings.npy"))


def test_download_errors_are_bundle_errors(served, tmp_path):
    root, base = served
    with pytest.raises(BundleError, match="download failed"):
        download_bundle(f"{base}/nothing/config.yaml", cache_dir=tmp_path)
    (root / "evil.yaml").write_text("kind: embedding\nfiles:\n  ../../etc/passwd: abc\n")
    with pytest.raises(BundleError, match="not a plain file name"):
        download_bundle(f"{base}/evil.yaml", cache_dir=tmp_path)


def test_a_bundle_comes_only_from_disk_or_http(tiny_bundle, served, tmp_path):
    """Hostile configs: other schemes, smuggled file names, loops, sizes."""
    root, base = served
    with pytest.raises(BundleError, match="only http"):
        load_bundle("file:///etc/passwd")
    pointer = root / "pointer.yaml"
    pointer.write_text("bundle: file:///etc/passwd\n")  # a remote pointer at a local file
    with pytest.raises(BundleError, match="only http"):
        download_bundle(f"{base}/pointer.yaml", cache_dir=tmp_path / "cache")
    (root / "loop.yaml").write_text("bundle: loop.yaml\n")
    with pytest.raises(BundleError, match="more than 3 pointers"):
        download_bundle(f"{base}/loop.yaml", cache_dir=tmp_path / "cache")
    local_loop = tmp_path / "loop.yaml"
    local_loop.write_text("bundle: loop.yaml\n")
    with pytest.raises(BundleError, match="more than 3 pointers"):
        load_bundle(local_loop)
    for name in ("http:evil", ".hidden", "a:b", "%2e%2e"):
        (root / "odd.yaml").write_text(f"kind: embedding\nfiles:\n  '{name}': abc\n")
        with pytest.raises(BundleError, match="not a plain file name"):
            download_bundle(f"{base}/odd.yaml", cache_dir=tmp_path / "cache")
    (root / "huge.yaml").write_bytes(b"# " + b"x" * (1 << 21))
    with pytest.raises(BundleError, match="not a config.yaml"):
        download_bundle(f"{base}/huge.yaml", cache_dir=tmp_path / "cache")


def test_downloads_are_capped_by_the_declared_sizes(tiny_bundle, served, tmp_path, monkeypatch):
    import yaml

    import image_tag_suggestion.bundle as bundle_module

    root, base = served
    shutil.copytree(tiny_bundle, root / "tiny")
    config = yaml.safe_load((root / "tiny" / "config.yaml").read_text())
    assert config["sizes"]["encoder.tflite"] == (tiny_bundle / "encoder.tflite").stat().st_size  # written by write_config
    config["sizes"]["encoder.tflite"] = 100  # the server sends more than the config promised
    (root / "tiny" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(BundleError, match="larger than the 100 bytes"):
        download_bundle(f"{base}/tiny/config.yaml", cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != "config.yaml"]
    monkeypatch.setattr(bundle_module, "MAX_DOWNLOAD_BYTES", 1000)
    config["sizes"]["encoder.tflite"] = 5000
    (root / "tiny" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(BundleError, match="declares more than 1000 bytes"):
        download_bundle(f"{base}/tiny/config.yaml", cache_dir=tmp_path / "cache")


def test_cache_list_and_clear_touch_only_downloaded_bundles(tiny_bundle, served, tmp_path):
    import subprocess
    import sys

    root, base = served
    shutil.copytree(tiny_bundle, root / "tiny")
    cache = tmp_path / "cache"
    download_bundle(f"{base}/tiny/config.yaml", cache_dir=cache)
    (cache / "my notes").mkdir()  # not ours: stays
    cli = [sys.executable, "-m", "image_tag_suggestion.cli", "cache"]
    listed = subprocess.run([*cli, "list", "--dir", str(cache)], capture_output=True, text=True, timeout=60)
    assert "1 downloaded bundles" in listed.stdout
    cleared = subprocess.run([*cli, "clear", "--dir", str(cache)], capture_output=True, text=True, timeout=60)
    assert cleared.returncode == 0 and "removed 1 downloaded bundles" in cleared.stdout
    assert [p.name for p in cache.iterdir()] == ["my notes"]
