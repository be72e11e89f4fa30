"""The face detector's decoding, checked against outputs built by hand, and the real model
on a real portrait."""

from __future__ import annotations

import numpy as np

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
