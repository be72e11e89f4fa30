"""Write the scene head's training data: the built-in encoder's embedding of every photo in the
tuning part of the scenes dev set, with its words, and of every photo in the tuning part of
the object dev set (many are things cut out on white: what a scene is not), with its scene
words and those its WordNet truth implies ("flower" and "plant" for a daisy, nothing for a
hammer). The held-out parts are never written.

    .venv/bin/python benchmarks/scenes_devset.py             # once: builds the scenes dev set
    .venv/bin/python benchmarks/scene_head_data.py            # -> image_tag_suggestion/conversion/scene_data.npz
    .venv/bin/python -m image_tag_suggestion.conversion.default_bundle --out image_tag_suggestion/default_model

The bundle build fits the head from that file (``conversion/scene_tags.py``), so the head can
be rebuilt anywhere without the photos; the tests check the file against the photos they have.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devset  # noqa: E402
import scenes_devset  # noqa: E402

from image_tag_suggestion import ImagePredictor  # noqa: E402
from image_tag_suggestion.bundle import DEFAULT_CONFIG, load_bundle  # noqa: E402
from image_tag_suggestion.conversion.scene_tags import DATA_FILE, read_vocabulary, save_data  # noqa: E402


def implied_words(photo: devset.Photo, vocabulary: devset.Vocabulary) -> list[str]:
    """The photo's scene words, and those whose sense is its truth or above it ("plant" for a daisy)."""
    from image_tag_suggestion.conversion.wordnet import offset_of

    truth = [offset_of(t) for t in photo.truth]
    found = [w.word for w in read_vocabulary()
             if w.wnid in photo.scene or any(offset_of(w.wnid) == t or offset_of(w.wnid) in vocabulary.ancestors(t)
                                             for t in truth)]
    return found + (["person"] if photo.people else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=Path, default=scenes_devset.DEFAULT_OUT)
    parser.add_argument("--objects", type=Path, default=devset.DEFAULT_OUT, help="the object dev set (devset.py)")
    parser.add_argument("--out", type=Path, default=DATA_FILE)
    args = parser.parse_args()

    scenes = [p for p in scenes_devset.load(args.scenes) if p.split == "tune"]
    objects = [p for p in devset.load(args.objects) if p.split == "tune"]
    vocabulary = devset.Vocabulary()
    files = [str(args.scenes / p.file) for p in scenes] + [str(args.objects / p.file) for p in objects]
    words = ([scenes_devset.words_of(p) for p in scenes]
             + [sorted(set(implied_words(p, vocabulary))) for p in objects])
    predictor = ImagePredictor(load_bundle(DEFAULT_CONFIG))
    features = predictor.predict_from_files(files)[:, : predictor.visual_dim]
    save_data(args.out, features, words, [p.photo for p in scenes + objects])
    print(f"{args.out}: {len(scenes)} scene and {len(objects)} object tuning photos, {features.shape[1]}-d embeddings")


if __name__ == "__main__":
    main()
