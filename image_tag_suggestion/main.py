"""The Streamlit app: upload photos, see their tags. A thin layer over the library:
everything shown here is also ``image-tags tag`` and ``ImagePredictor``/``LabelPredictor``.

    streamlit run image_tag_suggestion/main.py

The app may face the open internet, so a visitor never types a location: the models and
the collection index are the operator's settings, read from the environment:
- ``IMAGE_TAGS_MODELS_DIR``: a folder of bundles to offer beside the built-in model (``models``);
- ``IMAGE_TAGS_REMOTE_MODELS``: config URLs of bundles to offer, separated by spaces;
- ``IMAGE_TAGS_SEED_MODEL``: ``1`` offers the original app's model (downloaded from its release,
  checked and imported on first use; the import needs TensorFlow). Once imported into the
  cache it is offered anyway;
- ``IMAGE_TAGS_INDEX``: the index the Collection view searches;
- ``IMAGE_TAGS_MAX_PIXELS``: the largest upload decoded, in pixels (40 million).
"""

from __future__ import annotations

import os

import altair  # noqa: F401  imported with the page, not on the first upload (0.3 s)
import numpy as np
import streamlit as st

from image_tag_suggestion import BundleError, ImagePredictor, LabelPredictor, load_bundle
from image_tag_suggestion.bundle import DEFAULT_CONFIG, find_bundles
from image_tag_suggestion.collection import CollectionError, EmbeddingMatrix, index_meta, search_tag
from image_tag_suggestion.charts import tags_chart
from image_tag_suggestion.formats import tag_line, to_csv, to_json
from image_tag_suggestion.seed_model import resolve_model, seed_folder
from image_tag_suggestion.tagging import TagResult, tag_files

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif", "avif"]
MODELS_DIR = os.environ.get("IMAGE_TAGS_MODELS_DIR", "models")
REMOTE_MODELS = os.environ.get("IMAGE_TAGS_REMOTE_MODELS", "").split()
INDEX = os.environ.get("IMAGE_TAGS_INDEX", "").strip()
OFFER_SEED = os.environ.get("IMAGE_TAGS_SEED_MODEL", "").strip() == "1"
SEED_MODEL = "original app's (MobileNetV2, Open Images labels)"
MAX_PIXELS = int(os.environ.get("IMAGE_TAGS_MAX_PIXELS", 40_000_000))
DEFAULT_MODEL = "built-in (EfficientNet-Lite0, ImageNet + broader tags)"
PREVIEW_MIN_SIZE = 512
PREVIEW_MAX_SIZE = 1024  # what is kept of an upload: a preview, never the full pixels
THUMBNAIL_MIN_SIZE = 256
GALLERY_COLUMNS = 4


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_predictors(location: str) -> tuple[ImagePredictor, LabelPredictor]:
    """Once per process and model: the encoder and label table stay in memory."""
    bundle = load_bundle(resolve_model(location))
    image_predictor, label_predictor = ImagePredictor(bundle, max_pixels=MAX_PIXELS), LabelPredictor(bundle)
    # Warm up: LiteRT plans its first call; do it now rather than on the first upload.
    image_predictor.predict_from_array(np.zeros((64, 64, 3), np.uint8))
    return image_predictor, label_predictor


@st.cache_data(max_entries=128, show_spinner=False)
def embed_upload(location: str, name: str, data: bytes):
    """Decode and embed one upload; cached (its embedding and a preview, not its pixels), so
    reruns with other options cost only the ranking."""
    image_predictor, label_predictor = load_predictors(location)
    upload = _NamedBytes(data, name)
    result = next(tag_files([upload], image_predictor, label_predictor, top_k=1, keep_pixels_min_size=PREVIEW_MIN_SIZE))
    return result.embedding, preview(result.pixels), result.error


def preview(pixels):
    """The picture at most PREVIEW_MAX_SIZE pixels on its long side."""
    if pixels is None or max(pixels.shape[:2]) <= PREVIEW_MAX_SIZE:
        return pixels
    from PIL import Image

    image = Image.fromarray(pixels)
    image.thumbnail((PREVIEW_MAX_SIZE, PREVIEW_MAX_SIZE))
    return np.asarray(image)


class _NamedBytes(bytes):
    """Bytes that carry the upload's file name into error messages."""

    def __new__(cls, data: bytes, name: str):
        self = super().__new__(cls, data)
        self.name = name
        return self


@st.cache_resource(show_spinner="Loading the collection…", max_entries=4)
def load_collection(index: str, modified: float) -> EmbeddingMatrix:
    """Embeddings of an index, once per index file version (``modified`` is its mtime)."""
    return EmbeddingMatrix.load(index)


@st.cache_data(max_entries=2048, show_spinner=False)
def thumbnail(path: str):
    from image_tag_suggestion.images import ImageError, load_image

    try:
        return load_image(path, min_size=THUMBNAIL_MIN_SIZE)
    except ImageError:
        return None


def sidebar() -> dict:
    st.sidebar.header("Options")
    top_k = st.sidebar.slider("Tags in the chart", 1, 50, 20)
    include_broader = st.sidebar.checkbox("Include broader tags (dog, animal…)", value=True)
    choices = {DEFAULT_MODEL: str(DEFAULT_CONFIG)}
    choices.update({f"{path.name} ({path.parent.name})": str(path) for path in find_bundles(MODELS_DIR)})
    choices.update({f"{url.rsplit('/', 2)[-2]} (remote)": url for url in REMOTE_MODELS})
    if OFFER_SEED or (seed_folder() / "config.yaml").is_file():
        choices[SEED_MODEL] = "seed"
    choice = st.sidebar.selectbox("Model", list(choices), help="the built-in model and the bundles this server offers")
    location = choices[choice]
    locations = [location]
    if location != str(DEFAULT_CONFIG) and st.sidebar.checkbox("Also show the built-in general tags", value=True):
        locations.append(str(DEFAULT_CONFIG))
    return {"top_k": top_k, "include_broader": include_broader, "locations": locations}


def likely_cut_off(default: float) -> float:
    """The sidebar's cut-off; it starts at the model's own "likely" cut-off."""
    return st.sidebar.slider("Likely cut-off", 0.0, 1.0, float(default), 0.01,
                             help="tags scoring at least this are kept (the copy line, the downloads); the chart "
                                  "draws the others faded below a line. A score is the estimated probability that "
                                  "the tag is right.")


def main() -> None:
    st.set_page_config(page_title="Image tag suggestion", page_icon="🏷️", layout="wide")
    view = st.sidebar.radio("View", ["Tag photos", "Collection"], horizontal=True)
    if view == "Collection":
        collection_view()
    else:
        tag_view()


def collection_view() -> None:
    """Search an index made by ``image-tags index``: by tag, and "more like this"."""
    st.title("Collection")
    index = INDEX
    if not index:
        st.info("No collection is set up on this server. Its operator makes an index with "
                "`image-tags index FOLDER --out FILE.sqlite` and names it in `IMAGE_TAGS_INDEX`.")
        return
    top_k = st.sidebar.slider("Results", 4, 48, 12, 4)
    query = st.text_input("Search by tag", placeholder="dog, beach, guitar…").strip()
    like = st.session_state.get("like")
    try:
        if like:
            st.caption(f"More like **{os.path.basename(like)}**")
            if st.button("Back to tag search"):
                st.session_state.pop("like")
                st.rerun()
            meta = index_meta(index)
            matrix = load_collection(index, os.path.getmtime(index))
            image_predictor, _ = load_predictors(meta["model_path"])
            embedding, _ = image_predictor.predict_from_file(like)
            hits = matrix.nearest(embedding, top_k)
        elif query:
            label, hits = search_tag(index, query, top_k)
            st.caption(f"Best matches for **{label}**")
        else:
            return
    except (CollectionError, BundleError, ValueError, OSError) as exc:
        st.error(str(exc))
        return
    if not hits:
        st.warning("No indexed photo is likely to show this (the model's cut-off decides).")
    columns = st.columns(GALLERY_COLUMNS)
    for position, hit in enumerate(hits):
        column = columns[position % GALLERY_COLUMNS]
        pixels = thumbnail(hit.path)
        if pixels is None:
            column.warning(f"{os.path.basename(hit.path)}: cannot be read any more")
            continue
        column.image(pixels, caption=f"{os.path.basename(hit.path)} · {hit.score:.2f}", width="stretch")
        if column.button("More like this", key=f"like-{position}-{hit.path}"):
            st.session_state["like"] = hit.path
            st.rerun()


def tag_view() -> None:
    st.title("Image tag suggestion")
    st.caption("Upload photos and get the descriptive tags that fit them best. A score is the estimated "
               "probability that the tag is right; the likely tags (above the line) are the ones to keep.")
    options = sidebar()
    models = []
    for location in options["locations"]:
        try:
            models.append((location, *load_predictors(location)))
        except BundleError as exc:
            st.error(f"Cannot load this model: {exc}")
            return
    names = [image_predictor.bundle.name for _, image_predictor, _ in models]
    min_score = likely_cut_off(models[0][2].default_min_score)

    uploads = st.file_uploader("Photos", type=UPLOAD_TYPES, accept_multiple_files=True)
    results = []
    for upload in uploads or []:
        st.subheader(upload.name)
        outputs = [embed_upload(location, upload.name, upload.getvalue()) for location, _, _ in models]
        _, pixels, error = outputs[0]
        if error:
            st.error(error)
            results.append(TagResult(upload.name, error=error))
            continue
        ranked = [  # the chart's top tags, whatever their scores
            label_predictor.predict_from_array(embedding, top_k=options["top_k"], min_score=0.0,
                                               include_broader=options["include_broader"])
            for (_, _, label_predictor), (embedding, _, _) in zip(models, outputs)
        ]
        likely = [[t for t in tags if t.score >= min_score] for tags in ranked]
        results.append(TagResult(upload.name, tags=likely[0], more=dict(zip(names[1:], likely[1:]))))
        left, right = st.columns([2, 3])
        left.image(pixels, width="stretch")
        for name, tags, kept in zip(names, ranked, likely):
            if len(models) > 1:
                right.markdown(f"**{name}**")
            if tags:
                right.altair_chart(tags_chart(tags, min_score), width="stretch")
            if kept:
                right.code(tag_line(kept), language=None, wrap_lines=True)
            else:
                right.warning(f"No tag is likely enough (none scores {min_score:.2f} or more): "
                              "the chart shows the best guesses.")
    if results:
        st.divider()
        first, second = st.columns(2)
        first.download_button("Download the likely tags (CSV)", to_csv(results, names[0]), "tags.csv", "text/csv")
        second.download_button("Download the likely tags (JSON)", to_json(results, names[0]), "tags.json",
                               "application/json")


main()
