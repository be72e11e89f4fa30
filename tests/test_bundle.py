"""Bundles: load and validate, refuse corruption, download with sha256 checks from a local server."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import sys
import threading
import time
import types
from pathlib import Path

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


# --- Hostile servers and configs: redirects, deadlines, files a config names -----------------------------

class _TrickyHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, except the paths in ``server.routes`` (path -> function of the handler);
    every request's Host header and path are kept in ``server.seen``."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen.append((self.headers.get("Host", ""), self.path))
        route = self.server.routes.get(self.path)
        if route is None:
            return super().do_GET()
        try:
            route(self)
        except OSError:  # the client gave up (as it should)
            pass


def _redirect(location):
    def route(handler):
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return route


def _trickle(total=60, every=0.05, stall_after=None):
    """A body of ``total`` bytes sent one byte every ``every`` seconds (about 3 s in all), or
    ``stall_after`` bytes and then nothing for 3 s: only an overall deadline stops it early."""
    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        handler.wfile.flush()
        if stall_after is not None:
            handler.wfile.write(b"x" * stall_after)
            handler.wfile.flush()
            time.sleep(3)
            return
        for _ in range(total):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(every)
    return route


@pytest.fixture
def tricky(tmp_path):
    """A local HTTP server on 127.0.0.1 with programmable redirects and slow answers."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_TrickyHandler, directory=str(root)))
    server.daemon_threads = True
    server.routes, server.seen = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    yield types.SimpleNamespace(root=root, port=port, base=f"http://127.0.0.1:{port}", routes=server.routes,
                                seen=server.seen)
    server.shutdown()
    server.server_close()


def test_a_redirect_to_another_host_is_refused(tiny_bundle, tricky, tmp_path):
    shutil.copytree(tiny_bundle, tricky.root / "tiny")
    elsewhere = f"http://localhost:{tricky.port}"  # the same server under another host name
    tricky.routes["/moved/config.yaml"] = _redirect(f"{elsewhere}/tiny/config.yaml")
    with pytest.raises(BundleError, match="redirect"):
        download_bundle(f"{tricky.base}/moved/config.yaml", cache_dir=tmp_path / "cache")
    tricky.routes["/tiny/encoder.tflite"] = _redirect(f"{elsewhere}/tiny/encoder.tflite")  # a file, too
    with pytest.raises(BundleError, match="redirect"):
        download_bundle(f"{tricky.base}/tiny/config.yaml", cache_dir=tmp_path / "cache")
    assert [host for host, _ in tricky.seen if not host.startswith("127.0.0.1")] == []


def test_a_redirect_to_ftp_is_refused(tiny_bundle, tricky, tmp_path):
    tricky.routes["/moved/config.yaml"] = _redirect("ftp://127.0.0.1:1/config.yaml")
    with pytest.raises(BundleError, match="redirect"):
        download_bundle(f"{tricky.base}/moved/config.yaml", cache_dir=tmp_path / "cache")


def test_at_most_three_redirects_are_followed(tiny_bundle, tricky, tmp_path):
    shutil.copytree(tiny_bundle, tricky.root / "tiny")
    tricky.routes["/hop1"] = _redirect("/tiny/config.yaml")
    for hop in (2, 3, 4):
        tricky.routes[f"/hop{hop}"] = _redirect(f"{tricky.base}/hop{hop - 1}")
    assert download_bundle(f"{tricky.base}/hop3", cache_dir=tmp_path / "cache").is_dir()  # 3: fine
    with pytest.raises(BundleError, match="redirect"):
        download_bundle(f"{tricky.base}/hop4", cache_dir=tmp_path / "other-cache")


def test_redirect_rules():
    from image_tag_suggestion.download import redirect_refusal

    allowed = [("http://a.org/x", "https://a.org/y"), ("https://a.org/x", "https://a.org:8443/y"),
               ("http://a.org/x", "http://A.org/y"), ("https://mirror.org/x", "https://cdn.org/y")]
    for old, new in allowed:
        assert redirect_refusal(old, new, allow_hosts=("cdn.org",)) is None, (old, new)
    refused = [("https://a.org/x", "http://a.org/y"), ("http://a.org/x", "https://b.org/y"),
               ("https://a.org/x", "ftp://a.org/y"), ("https://a.org/x", "file:///etc/passwd"),
               ("http://a.org/x", "http://cdn.org/y")]  # another allowed host: over https only
    for old, new in refused:
        assert redirect_refusal(old, new, allow_hosts=("cdn.org",)), (old, new)


@pytest.mark.parametrize("what", ["config", "file", "stall"])
def test_a_download_has_an_overall_deadline(tiny_bundle, tricky, tmp_path, what):
    """A server that trickles bytes (each socket read succeeds) or stalls is cut off at the deadline."""
    shutil.copytree(tiny_bundle, tricky.root / "tiny")
    if what == "config":
        tricky.routes["/tiny/config.yaml"] = _trickle()
    elif what == "file":
        tricky.routes["/tiny/encoder.tflite"] = _trickle()
    else:
        tricky.routes["/tiny/encoder.tflite"] = _trickle(stall_after=10)
    start = time.monotonic()
    with pytest.raises(BundleError, match="deadline"):
        download_bundle(f"{tricky.base}/tiny/config.yaml", cache_dir=tmp_path / "cache", timeout=30, deadline=0.5)
    assert time.monotonic() - start < 2.0
    assert not list((tmp_path / "cache").rglob("encoder.tflite"))


def test_download_verified_has_an_overall_deadline(tricky, tmp_path):
    from image_tag_suggestion.download import DownloadError, download_verified

    tricky.routes["/slow.bin"] = _trickle()
    start = time.monotonic()
    with pytest.raises(DownloadError, match="deadline"):
        download_verified(f"{tricky.base}/slow.bin", tmp_path / "slow.bin", "0" * 64, 30, 1000, deadline=0.5)
    assert time.monotonic() - start < 2.0 and not (tmp_path / "slow.bin").exists()


@pytest.fixture
def opened(monkeypatch):
    """The paths this process opens from now on (clear it after the setup): Python's opens
    (audit events) and the models LiteRT loads (it opens them in C++)."""
    import ai_edge_litert.interpreter as litert

    paths: list[str] = []
    _OPEN_WATCHERS.append(paths)
    real = litert.Interpreter

    def interpreter(*args, model_path=None, **kwargs):
        paths.append(str(model_path))
        return real(*args, model_path=model_path, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", interpreter)
    yield paths
    _OPEN_WATCHERS.remove(paths)


_OPEN_WATCHERS: list[list[str]] = []


def _audit(event, args):
    if event == "open" and _OPEN_WATCHERS and isinstance(args[0], (str, bytes, os.PathLike)):
        for paths in _OPEN_WATCHERS:
            paths.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _named(config, key):
    section, field = key.split(".")
    return config.setdefault(section, {}), field


@pytest.mark.parametrize("key, name", [
    ("encoder.tflite", "ABSOLUTE"), ("encoder.tflite", "../outside.tflite"), ("encoder.tflite", "unlisted.tflite"),
    ("encoder.tflite", "sub/encoder.tflite"), ("faces.detector", "ABSOLUTE"), ("encoder.keras", "../outside.tflite"),
])
def test_a_config_may_name_only_listed_files_inside_the_bundle(tiny_bundle, tmp_path, opened, key, name):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    outside = tmp_path / "outside.tflite"  # a working model: only the rules stop it
    shutil.copy(tiny_bundle / "encoder.tflite", outside)
    shutil.copy(tiny_bundle / "encoder.tflite", bundle / "unlisted.tflite")
    (bundle / "sub").mkdir()
    shutil.copy(tiny_bundle / "encoder.tflite", bundle / "sub" / "encoder.tflite")
    config = yaml.safe_load((bundle / "config.yaml").read_text())
    section, field = _named(config, key)
    section[field] = str(outside) if name == "ABSOLUTE" else name
    (bundle / "config.yaml").write_text(yaml.safe_dump(config))
    opened.clear()  # what the setup opened
    with pytest.raises(BundleError, match=re.escape(f"{key} names")):
        ImagePredictor.init_from_config_path(bundle)
    with pytest.raises(BundleError, match=re.escape(f"{key} names")):
        load_bundle(bundle)
    assert not [p for p in opened if Path(p).name in ("outside.tflite", "unlisted.tflite") or "sub" in Path(p).parts]


@pytest.mark.parametrize("case", ["unlisted bias", "unlisted labels"])
def test_label_files_must_be_listed_with_their_hash(tiny_bundle, tmp_path, opened, case):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    config = yaml.safe_load((bundle / "config.yaml").read_text())
    if case == "unlisted bias":  # LabelTable.load reads label_bias.npy whenever it is there
        np.save(bundle / "label_bias.npy", np.full(5, 100.0, dtype=np.float32))
        name = "label_bias.npy"
    else:
        del config["files"]["labels.json"]
        (bundle / "config.yaml").write_text(yaml.safe_dump(config))
        name = "labels.json"
    opened.clear()  # what the setup opened
    with pytest.raises(BundleError, match=re.escape(name)):
        LabelPredictor.init_from_config_path(bundle)
    assert not [p for p in opened if Path(p).name == name]


def test_a_downloaded_config_may_name_only_listed_files(tiny_bundle, tricky, tmp_path):
    shutil.copytree(tiny_bundle, tricky.root / "tiny")
    config = yaml.safe_load((tricky.root / "tiny" / "config.yaml").read_text())
    config["encoder"]["tflite"] = str(tmp_path / "outside.tflite")
    (tricky.root / "tiny" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(BundleError, match="encoder.tflite names"):
        download_bundle(f"{tricky.base}/tiny/config.yaml", cache_dir=tmp_path / "cache")
    assert [path for _, path in tricky.seen] == ["/tiny/config.yaml"]  # refused before any file was fetched


def test_pointers_follow_one_set_of_rules(tiny_bundle, tricky, tmp_path):
    """On disk a pointer may name a folder (relative to it) or a URL; a downloaded pointer only
    a URL on the same host, as a redirect."""
    shutil.copytree(tiny_bundle, tricky.root / "tiny")
    local = tmp_path / "pointer.yaml"
    local.write_text(f"bundle: {tricky.base}/tiny/config.yaml\n")
    assert load_bundle(local, cache_dir=tmp_path / "cache").name == "tiny"
    (tricky.root / "relative.yaml").write_text("bundle: tiny/config.yaml\n")
    assert load_bundle(f"{tricky.base}/relative.yaml", cache_dir=tmp_path / "cache").name == "tiny"
    (tricky.root / "away.yaml").write_text(f"bundle: http://localhost:{tricky.port}/tiny/config.yaml\n")
    with pytest.raises(BundleError, match="another host"):
        load_bundle(f"{tricky.base}/away.yaml", cache_dir=tmp_path / "cache")
    assert [host for host, _ in tricky.seen if not host.startswith("127.0.0.1")] == []


def test_write_config_writes_through_atomic_write(tiny_bundle, tmp_path, monkeypatch):
    import image_tag_suggestion.bundle as bundle_module
    from image_tag_suggestion.bundle import write_config

    bundle = copy_bundle(tiny_bundle, tmp_path)
    before = (bundle / "config.yaml").read_bytes()
    config = yaml.safe_load(before)

    def failing(path, data, mode=None):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module, "atomic_write", failing)
    with pytest.raises(OSError, match="disk full"):
        write_config(bundle, {**config, "name": "renamed"})
    assert (bundle / "config.yaml").read_bytes() == before


def test_the_seed_download_is_hardened_too(tricky, tmp_path):
    """``--model seed`` fetches through download_verified: same redirect rules, a deadline."""
    from image_tag_suggestion.seed_model import seed_bundle

    (tricky.root / "labels.json").write_text("{}")
    files = {"labels.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}
    tricky.routes["/moved/labels.json"] = _redirect(f"http://localhost:{tricky.port}/labels.json")
    with pytest.raises(BundleError, match="redirect"):
        seed_bundle(tmp_path / "cache", base_url=f"{tricky.base}/moved", files=files)
    tricky.routes["/slow/labels.json"] = _trickle()
    start = time.monotonic()
    with pytest.raises(BundleError, match="deadline"):
        seed_bundle(tmp_path / "cache", base_url=f"{tricky.base}/slow", files=files, deadline=0.5)
    assert time.monotonic() - start < 2.0
    assert [host for host, _ in tricky.seen if not host.startswith("127.0.0.1")] == []
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
