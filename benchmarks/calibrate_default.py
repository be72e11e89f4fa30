"""Fit the built-in model's score calibration and "likely" cut-off on the dev set's tuning part.

    .venv/bin/python benchmarks/devset.py                  # once: builds the dev set
    .venv/bin/python benchmarks/calibrate_default.py       # writes conversion/default_calibration.yaml
                                                           # and the committed bundle's config.yaml

Only photos of the tuning part are used; the held-out part is for ``tag_quality.py``.

- Calibration: for each tuning photo, its 20 best specific tags and its 20 best broader
  tags by the model's own score, each judged right or wrong (``tag_quality.Judge``), and its
  best face score against whether people are in it; one logistic fit per group,
  ``P(right) = sigmoid(slope * logit(score) + intercept)`` (``training.calibration.fit_platt``).
- People: a face is present when the detector gives it 0.5 (its own threshold); a portrait
  has one face present, filling at least 15% of the picture's height (the faces of the
  tuning part's portraits fill 15% to 80%, those of its other photos of people at most 14%);
  a group has three present.
- Cut-off: the lowest of 0.05, 0.10, ... 0.95 at which the shown tags of the tuning photos
  are at least ``--target`` precise (0.85) *out of fold*: five times, the calibration is
  fitted on four fifths of the tuning photos and the cut-offs are measured on the fifth, so
  no photo judges a calibration fitted on it. The target keeps five points of room above the
  80% the held-out part must reach: a few hundred photos, many of them alike (castles,
  cut-out fruit), make a part's precision move by that much.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devset  # noqa: E402
import tag_quality  # noqa: E402

from image_tag_suggestion import ImagePredictor, LabelPredictor, load_bundle  # noqa: E402
from image_tag_suggestion.conversion.default_bundle import CALIBRATION_FILE, recalibrate  # noqa: E402
from image_tag_suggestion.scoring import CALIBRATED_GROUPS, Calibration, Scorer  # noqa: E402
from image_tag_suggestion.training.calibration import fit_platt  # noqa: E402

CANDIDATES = 20
FOLDS = 5
CUT_OFFS = np.round(np.arange(0.05, 1.0, 0.05), 2)
PEOPLE = {"portrait_min_height": 0.15, "face_present": 0.5}


def calibration_pairs(photos, raw_scores, embeddings, label_predictor, judge):
    """Per group: (logit of the model's score, right or not) over each photo's best candidates;
    for faces, the best face score (the first face signal after the encoder's dimensions)."""
    table = label_predictor.labels
    groups = {"specific": np.arange(table.n_classes), "broader": np.flatnonzero(table.is_broader)}
    person = table.ids.index(tag_quality.PERSON_ID)
    pairs = {group: ([], []) for group in CALIBRATED_GROUPS}

    def add(group: str, score: float, right: bool) -> None:
        score = float(np.clip(score, 1e-7, 1 - 1e-7))
        pairs[group][0].append(np.log(score / (1 - score)))
        pairs[group][1].append(right)

    for photo, row, embedding in zip(photos, raw_scores, embeddings):
        for group, columns in groups.items():
            for column in columns[np.argsort(-row[columns])[:CANDIDATES]]:
                add(group, row[column], judge.right(table.ids[column], photo))
        add("faces", embedding[table.dim], judge.right(table.ids[person], photo) and bool(photo.people))
    return {group: (np.array(x), np.array(y, dtype=float)) for group, (x, y) in pairs.items()}


def fit(pairs) -> dict:
    fitted = {}
    for group, (x, y) in pairs.items():
        slope, intercept = fit_platt(x, y)
        fitted[group] = {"slope": round(slope, 4), "intercept": round(intercept, 4)}
    return fitted


def scorer_with(bundle, label_predictor, fitted: dict) -> Scorer:
    rule = dataclasses.replace(bundle.scoring, calibration={g: Calibration(**v) for g, v in fitted.items()}, **PEOPLE)
    return Scorer(label_predictor.labels, rule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devset", type=Path, default=devset.DEFAULT_OUT)
    parser.add_argument("--target", type=float, default=0.85, help="out-of-fold precision of shown tags on the tuning part")
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    parser.add_argument("--no-bundle", action="store_true", help="do not rewrite the committed bundle's config.yaml")
    args = parser.parse_args()

    photos = [p for p in devset.load(args.devset) if p.split == "tune"]
    judge = tag_quality.Judge(devset.Vocabulary())
    bundle = load_bundle()
    label_predictor = LabelPredictor(bundle)
    embeddings = tag_quality.embed(photos, args.devset, ImagePredictor(bundle))
    raw = label_predictor.scores(embeddings, calibrated=False)

    pairs = calibration_pairs(photos, raw, embeddings, label_predictor, judge)
    fitted = fit(pairs)
    report = [f"{group}: {len(y)} candidates, {int(y.sum())} right; slope {fitted[group]['slope']:.3f}, "
              f"intercept {fitted[group]['intercept']:+.3f}" for group, (_, y) in pairs.items()]

    # Out of fold: calibrate on four fifths of the photos, measure the cut-offs on the fifth.
    folds = np.arange(len(photos)) % FOLDS
    np.random.default_rng(0).shuffle(folds)
    shown_by_cut = {cut_off: [None] * len(photos) for cut_off in CUT_OFFS}
    brier = {group: {"raw": [], "calibrated": []} for group in CALIBRATED_GROUPS}
    for fold in range(FOLDS):
        inside, outside = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        fold_pairs = calibration_pairs([photos[i] for i in inside], raw[inside], embeddings[inside], label_predictor, judge)
        fold_fit = fit(fold_pairs)
        held = calibration_pairs([photos[i] for i in outside], raw[outside], embeddings[outside], label_predictor, judge)
        for group, (x, y) in held.items():
            calibrated = 1 / (1 + np.exp(-(fold_fit[group]["slope"] * x + fold_fit[group]["intercept"])))
            brier[group]["raw"] += list((1 / (1 + np.exp(-x)) - y) ** 2)
            brier[group]["calibrated"] += list((calibrated - y) ** 2)
        label_predictor.scorer = scorer_with(bundle, label_predictor, fold_fit)
        for cut_off in CUT_OFFS:
            for i, tags in zip(outside, label_predictor.predict_batch(embeddings[outside], top_k=tag_quality.TOP_K,
                                                                      min_score=float(cut_off))):
                shown_by_cut[cut_off][i] = tags
    chosen, curve = None, []
    for cut_off in CUT_OFFS:
        result = tag_quality.figures(photos, shown_by_cut[cut_off], shown_by_cut[cut_off], judge)
        curve.append(f"  {cut_off:.2f}: precision {result.precision:.3f}, coverage {result.coverage:.3f}")
        if chosen is None and result.precision >= args.target:
            chosen = float(cut_off)
    if chosen is None:
        raise SystemExit(f"no cut-off reaches precision {args.target} out of fold:\n" + "\n".join(curve))

    document = {
        "fitted_on": f"tuning part of the dev set: {len(photos)} photos (benchmarks/devset.py)",
        "calibration": fitted,
        "people": PEOPLE,
        "min_score": chosen,
        "target_precision_out_of_fold": args.target,
    }
    args.out.write_text("# Written by benchmarks/calibrate_default.py; do not edit by hand.\n"
                        + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    print("\n".join(report))
    print("tuning part, out of fold: Brier score of each group's candidates, the model's own score -> calibrated:\n"
          + "\n".join(f"  {group}: {np.mean(b['raw']):.4f} -> {np.mean(b['calibrated']):.4f}" for group, b in brier.items()))
    print("tuning part, out of fold: precision and coverage of shown tags by cut-off:\n" + "\n".join(curve))
    print(f"cut-off {chosen} written to {args.out}")
    if not args.no_bundle:
        print(f"rewrote {recalibrate(bundle.folder, args.out)}")


if __name__ == "__main__":
    main()
