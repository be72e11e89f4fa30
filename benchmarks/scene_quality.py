"""Tag quality on everyday scenes: the scenes dev set judged like the object dev set.

    .venv/bin/python benchmarks/scenes_devset.py          # once: builds the scenes dev set
    .venv/bin/python benchmarks/scene_quality.py [--model DIR] [--show N] [--cut-offs]

Each photo's words (``scenes_labels.csv``) become WordNet senses through the scene vocabulary
(``image_tag_suggestion/conversion/scene_tags.yaml``; a word's parents count too: a beach is
also a coast and a landscape), and its other objects are WordNet senses already; the entry word
is its labelled sense, or resolved like the words, or as its first noun sense. Then
``tag_quality.py``'s judge decides: a shown tag is right when it names one of those senses,
something broader, or something finer ("alp" on a mountain). Prints the figures of
``tag_quality.py`` for the tuning and held-out parts, then the held-out part by kind of photo,
the people photos whose faces do not show, and how the photo properties (black and white) fare;
with ``--cut-offs``, the tuning part's figures by cut-off with its scene head fitted out of fold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devset  # noqa: E402
import scenes_devset  # noqa: E402
import tag_quality  # noqa: E402

from image_tag_suggestion import ImagePredictor, LabelPredictor  # noqa: E402
from image_tag_suggestion.bundle import DEFAULT_CONFIG, load_bundle  # noqa: E402
from image_tag_suggestion.conversion.scene_tags import read_vocabulary, targets  # noqa: E402


def judged_photos(photos: list[scenes_devset.ScenePhoto], vocabulary: devset.Vocabulary) -> list[devset.Photo]:
    """The scene photos as the object dev set's records, with WordNet truth."""
    words = read_vocabulary()
    wnid = {w.word: w.wnid for w in words}
    truth_rows = targets([scenes_devset.words_of(p) for p in photos], words)
    records = []

    def senses(keys: list[str]) -> list[str]:
        return [vocabulary.synsets[vocabulary.resolve(key)].wnid for key in keys]

    for photo, row in zip(photos, truth_rows):
        truth = [words[i].wnid for i in row.nonzero()[0]] + senses(photo.objects)
        try:
            entry = senses(photo.entry_sense) or [wnid.get(photo.entry) or
                                                  senses([photo.entry.replace(" ", "_") + ".n.01"])[0]]
        except ValueError:  # a word WordNet lacks ("solar cooker"): the photo's other words stand in
            entry = truth
        records.append(devset.Photo(photo=photo.photo, file=photo.file, split=photo.split, truth=truth or entry,
                                    entry=entry, people=photo.people, truth_names=photo.tags,
                                    entry_names=[photo.entry], synonyms=[], finer=[], broader=[]))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=Path, default=scenes_devset.DEFAULT_OUT)
    parser.add_argument("--model", default=str(DEFAULT_CONFIG))
    parser.add_argument("--min-score", type=float, default=None)
    parser.add_argument("--show", type=int, default=0, help="print the shown tags of this many held-out photos")
    parser.add_argument("--head", type=Path, default=None,
                        help="fit a scene head from this data file (scene_head_data.py) instead of the bundle's")
    parser.add_argument("--cut-offs", action="store_true",
                        help="also the tuning part's precision and coverage by cut-off, its head fitted out of fold")
    args = parser.parse_args()

    scene_photos = scenes_devset.load(args.scenes)
    vocabulary = devset.Vocabulary()
    photos = judged_photos(scene_photos, vocabulary)
    judge = tag_quality.Judge(vocabulary)
    bundle = load_bundle(args.model)
    image_predictor, label_predictor = ImagePredictor(bundle), LabelPredictor(bundle)
    if args.head:
        label_predictor = tag_quality.with_head(label_predictor, args.head)
    embeddings = tag_quality.embed(photos, args.scenes, image_predictor)
    min_score = label_predictor.default_min_score if args.min_score is None else args.min_score
    ranked = label_predictor.predict_batch(embeddings, top_k=tag_quality.TOP_K, min_score=0.0)
    shown = label_predictor.predict_batch(embeddings, top_k=tag_quality.TOP_K, min_score=min_score)

    def figures(rows: list[int]) -> tag_quality.Figures:
        return tag_quality.figures([photos[i] for i in rows], [shown[i] for i in rows], [ranked[i] for i in rows], judge)

    print(f"{bundle.name} on {len(photos)} scene photos; cut-off {min_score:g}\n")
    print(tag_quality.HEADER)
    parts = {name: [i for i, p in enumerate(photos) if p.split == name] for name in ("tune", "held-out")}
    for name, rows in parts.items():
        print(figures(rows).row(name))
    print("\nheld-out, by kind of photo:")
    print(tag_quality.HEADER)
    for kind in scenes_devset.KINDS:
        rows = [i for i in parts["held-out"] if scene_photos[i].kind == kind]
        if rows:
            print(figures(rows).row(kind[:9]))
    hidden = [i for i in parts["held-out"] + parts["tune"] if scene_photos[i].faces_visible == "no"]
    if hidden:
        tagged = sum(any(t.id == tag_quality.PERSON_ID for t in shown[i]) for i in hidden)
        print(f"\npeople photos whose faces do not show (both parts): {tagged} of {len(hidden)} get person")
    for tag in (t for t in label_predictor.labels.scenes if t.signal):  # photo properties, both parts
        shown_on = [i for i in range(len(photos)) if any(t.id == tag.id for t in shown[i])]
        labelled = [i for i in range(len(photos)) if tag.id in photos[i].truth]
        print(f"{tag.name} (from the {tag.signal}): shown on {len(shown_on)} photos, right on "
              f"{sum(i in labelled for i in shown_on)}; {len(set(shown_on) & set(labelled))} of {len(labelled)} "
              "labelled photos get it")
    if args.cut_offs:
        print("\ntuning part, the scene head fitted out of fold, by cut-off:")
        for cut_off, result in out_of_fold_cut_offs([photos[i] for i in parts["tune"]], embeddings[parts["tune"]],
                                                    label_predictor, judge):
            print(f"  {cut_off:.2f}: precision {result.precision:.3f}, coverage {result.coverage:.3f}, "
                  f"entry-level shown {result.entry_shown:.3f}")
    for i in parts["held-out"][: args.show]:
        marks = ", ".join(f"{t.label} {t.score:.2f}{'' if judge.right(t.id, photos[i]) else ' (x)'}" for t in shown[i])
        print(f"{photos[i].photo} [{photos[i].entry_names[0]}: {', '.join(photos[i].truth_names)}]: {marks or '-'}")


def out_of_fold_cut_offs(photos, embeddings, label_predictor, judge, folds: int = 5):
    """The tuning photos' figures at each cut-off (0.40 to 0.80), every photo's scene tags from a
    head fitted on the shipped data without its fold's photos: what ``calibrate_default.py``
    measures for the classifier, for the head. (The face detector's gate keeps the shipped head:
    it only decides where faces are looked for.)"""
    import copy

    from image_tag_suggestion.conversion.scene_tags import fit_head, load_data, with_scene_head
    from image_tag_suggestion.scoring import Scorer

    vocabulary = read_vocabulary()
    features, words, keys = load_data()
    fold_of = {p.photo: i % folds for i, p in enumerate(photos)}
    cut_offs = np.round(np.arange(0.40, 0.81, 0.05), 2)
    shown = {c: [None] * len(photos) for c in cut_offs}
    for fold in range(folds):
        train = np.array([fold_of.get(k) != fold for k in keys])
        weights, bias, kept, _ = fit_head(features[train], targets([words[i] for i in np.flatnonzero(train)], vocabulary),
                                          [w.scored for w in vocabulary])
        table = with_scene_head(label_predictor.labels, vocabulary, weights, bias, kept)
        predictor = copy.copy(label_predictor)
        predictor.labels, predictor.scorer = table, Scorer(table, label_predictor.scorer.rule)
        rows = [i for i, p in enumerate(photos) if fold_of[p.photo] == fold]
        for cut_off in cut_offs:
            for i, tags in zip(rows, predictor.predict_batch(embeddings[rows], top_k=tag_quality.TOP_K,
                                                             min_score=float(cut_off))):
                shown[cut_off][i] = tags
    return [(c, tag_quality.figures(photos, shown[c], shown[c], judge)) for c in cut_offs]


if __name__ == "__main__":
    main()
