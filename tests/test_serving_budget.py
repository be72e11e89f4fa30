"""Guards on the work and memory of tagging a folder, by counting rather than timing:
interpreters planned once, faces found in batches, decoded pixels let go of, and the batching
itself changing no result."""

from __future__ import annotations

import gc
import math
import threading
import weakref

import numpy as np
import pytest
from PIL import Image

from image_tag_suggestion import ImagePredictor, LabelPredictor
from image_tag_suggestion.tagging import tag_files

PHOTOS = 40


@pytest.fixture(scope="module")
def folder(tmp_path_factory, all_real_photos) -> list[str]:
    """40 real photos as 640x480 JPEGs, two of them panoramas (several crops each)."""
    out = tmp_path_factory.mktemp("budget")
    files = []
    for i in range(PHOTOS):
        size = (1600, 400) if i in (5, 23) else (640, 480)
        image = Image.open(all_real_photos[i % len(all_real_photos)]).convert("RGB").resize(size)
        files.append(str(out / f"photo_{i:02d}.jpg"))
        image.save(files[-1], quality=85)
    return files


@pytest.fixture
def counted(monkeypatch):
    """Counts AllocateTensors and Invoke per LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    allocations: dict[int, int] = {}
    invocations: dict[int, int] = {}
    allocate, invoke = Interpreter.allocate_tensors, Interpreter.invoke

    def counting_allocate(self):
        allocations[id(self)] = allocations.get(id(self), 0) + 1
        return allocate(self)

    def counting_invoke(self):
        invocations[id(self)] = invocations.get(id(self), 0) + 1
        return invoke(self)

    monkeypatch.setattr(Interpreter, "allocate_tensors", counting_allocate)
    monkeypatch.setattr(Interpreter, "invoke", counting_invoke)
    return allocations, invocations


def test_a_folder_plans_each_interpreter_once_and_finds_faces_in_batches(folder, counted):
    allocations, invocations = counted
    image_predictor, label_predictor = ImagePredictor.init_from_config_path(), LabelPredictor.init_from_config_path()
    detector, encoder = image_predictor.face_detector, image_predictor.encoder
    batch_size = 16
    results = list(tag_files(folder, image_predictor, label_predictor, batch_size=batch_size, workers=2))
    assert all(r.ok for r in results) and len(results) == PHOTOS

    assert allocations and all(count == 1 for count in allocations.values()), allocations
    detector_interpreters = [id(i) for runner in detector.runners for i in runner._interpreters.values()]
    encoder_interpreters = [id(i) for runner in encoder.runners for i in runner._interpreters.values()]
    # Never a resize: per runner its batch interpreter (and a batch-1 one if a call had a single
    # image). The batches are embedded in the 2 worker threads, a single-threaded runner each,
    # not on the encoder's shared all-cores runner.
    for runner in (*encoder.runners, *detector.runners):
        assert set(runner._interpreters) <= {1, runner.batch_size}
    assert not encoder.runners[0]._interpreters and 1 <= len(encoder.runners[1:]) <= 2
    assert 1 <= len(detector_interpreters) and detector.batch_size > 1
    crops = PHOTOS + 2 * 3  # each panorama is seen through 4 crops
    per_call = encoder.runners[1].batch_size
    assert sum(invocations.get(i, 0) for i in encoder_interpreters) <= math.ceil(crops / per_call) + math.ceil(PHOTOS / batch_size)
    assert set(allocations) <= set(detector_interpreters + encoder_interpreters)

    # Faces are looked for only in the photos the scene head gives a chance of a person, in
    # detector batches: not one photo at a time, and never more calls than for every photo.
    embeddings = np.stack([r.embedding for r in results])
    looked = image_predictor.looks_for_faces(embeddings[:, : image_predictor.visual_dim])
    assert 0 < looked.sum() < PHOTOS
    detector_calls = sum(invocations.get(i, 0) for i in detector_interpreters)
    assert detector_calls <= math.ceil(PHOTOS / detector.batch_size)
    assert detector_calls <= math.ceil(looked.sum() / detector.batch_size) + math.ceil(PHOTOS / batch_size)
    faces = embeddings[:, image_predictor.visual_dim : image_predictor.visual_dim + 4]
    assert not faces[~looked].any() and faces[looked, 0].max() > 0.5  # the astronaut's face is found


def test_decoded_pixels_are_let_go_of_once_a_photo_is_prepared(folder):
    image_predictor, label_predictor = ImagePredictor.init_from_config_path(), LabelPredictor.init_from_config_path()
    alive: list[weakref.ref] = []
    load = image_predictor.load

    def watched_load(source, min_size=None):
        pixels = load(source, min_size=min_size)
        alive.append(weakref.ref(pixels))
        return pixels

    image_predictor.load = watched_load
    for index, result in enumerate(tag_files(folder, image_predictor, label_predictor, batch_size=8, workers=2)):
        assert result.ok and result.pixels is None
        gc.collect()
        # Only photos being decoded now (one in each of the 2 threads) hold pixels: every other
        # photo decoded so far is down to its crops, its detector input and its properties.
        assert sum(ref() is not None for ref in alive) <= 2, index
    gc.collect()
    assert len(alive) == PHOTOS and all(ref() is None for ref in alive)

    # Asked for (the app's preview), the pixels go out with the result and nothing else holds them.
    alive.clear()
    for result in tag_files(folder[:6], image_predictor, label_predictor, batch_size=4, keep_pixels_min_size=256):
        pixels = weakref.ref(result.pixels)
        del result
        gc.collect()
        assert pixels() is None


def test_batches_change_no_result(folder):
    """A photo's embedding is the same alone (batch-1 interpreters) and in a padded batch."""
    image_predictor = ImagePredictor.init_from_config_path()
    batch = [image_predictor.prepare(image_predictor.load(f)) for f in folder[:11]]  # 8 + 3 padded
    together = image_predictor.encode(batch)
    alone = np.stack([image_predictor.encode([p])[0] for p in batch])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    # tag_files' way (a runner of the call's own, fewer threads, batches of 2) gives the same.
    np.testing.assert_allclose(image_predictor.encode(batch, concurrent=True), together, rtol=0, atol=1e-5)
    reference = image_predictor.preprocessing
    crops = np.concatenate([p.crops for p in batch])
    np.testing.assert_array_equal(reference.normalise(crops), (crops.astype(np.float32) - 127.0) * np.float32(1 / 128))


def test_tagging_from_the_command_line_leaves_the_download_code_unloaded(folder):
    """A cold start pays for what it imports: the http(s) machinery (``urllib.request``,
    ``http.client`` and the email parser under it) is loaded only when something is downloaded."""
    import subprocess
    import sys

    script = ("import sys; from image_tag_suggestion.cli import main; main(['tag', sys.argv[1], '-q']); "
              "print([m for m in ('urllib.request', 'http.client', 'image_tag_suggestion.download') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script, folder[0]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1:] == ["[]"], result.stdout


def threads_that_encode(image_predictor: ImagePredictor) -> set[int]:
    """The idents of the threads that call ``image_predictor.encode`` from now on (filled as they do)."""
    seen: set[int] = set()
    encode = image_predictor.encode

    def watched(prepared, concurrent=False):
        seen.add(threading.get_ident())
        return encode(prepared, concurrent)

    image_predictor.encode = watched
    return seen


def test_a_predictor_given_one_thread_tags_a_folder_on_one_thread(folder):
    """``--threads 1``: one worker thread, so one single-threaded runner of each model, and the
    same tags as on all cores."""
    one = ImagePredictor.init_from_config_path(num_threads=1)
    label_predictor = LabelPredictor.init_from_config_path()
    seen = threads_that_encode(one)
    alone = list(tag_files(folder[:20], one, label_predictor, batch_size=4))
    assert len(seen) == 1 and threading.get_ident() not in seen  # one worker thread, not the caller's
    assert len(one.encoder.runners) == 2 and len(one.face_detector.runners) <= 1
    together = list(tag_files(folder[:20], ImagePredictor.init_from_config_path(), label_predictor, batch_size=4))
    assert [r.tags for r in alone] == [r.tags for r in together]


def test_one_batch_is_embedded_on_the_callers_thread_on_all_cores(folder):
    """An upload or a few photos (one batch): the shortest wait for the results, so the encoder's
    shared all-cores runner on the caller's thread, not a worker's runner of its own."""
    image_predictor, label_predictor = ImagePredictor.init_from_config_path(), LabelPredictor.init_from_config_path()
    seen = threads_that_encode(image_predictor)
    results = list(tag_files(folder[:3], image_predictor, label_predictor, batch_size=16))
    assert all(r.ok for r in results)
    assert seen == {threading.get_ident()}
    assert image_predictor.encoder.runners[0]._interpreters and len(image_predictor.encoder.runners) == 1
