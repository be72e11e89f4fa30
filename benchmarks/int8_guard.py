"""The int8 encoder's quality guard and speed, beside the float16 default, in one run
(prints figures, asserts nothing; needs the build extra and the dev set):

    .venv/bin/python benchmarks/int8_guard.py [--out DIR]

1. Representative photos, never ones evaluated here: GCompris and Tux Paint images that are
   not in the dev set (Debian's gcompris-qt-data and tuxpaint-stamps-default), 400 at most.
2. The int8 bundle is built from them (``default_bundle --int8``) into ``--out``.
3. Top-1 agreement with the float16 default on the dev set's photos and the PyPI test photos,
   and the dev set's tag-quality figures for both (the same calibration and cut-off).
4. Encoder speed of both, batched and single, on 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

import devset
import tag_quality
from bench_serving import source_photos, timed
from image_tag_suggestion import DEFAULT_CONFIG, ImagePredictor, LabelPredictor, load_bundle
from image_tag_suggestion.conversion.default_bundle import build_default_bundle
from image_tag_suggestion.conversion.qt_resources import read_qt_resources
from image_tag_suggestion.encoder import TfliteEncoder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def representative_folder(folder: Path, limit: int = 400) -> int:
    """Write up to ``limit`` GCompris and Tux Paint images that the dev set does not hold."""
    used = {row["photo"] for row in devset.read_labels()}
    used_inside = {key.split("/", 1)[1].replace("__", "/") for key in used if key.startswith("gcompris:")}
    candidates = []
    for rcc in sorted(devset.GCOMPRIS.glob("*.rcc")):
        for name, data in read_qt_resources(rcc).items():
            if name.lower().endswith(IMAGE_SUFFIXES) and not any(name.endswith("/" + inside) for inside in used_inside):
                candidates.append((f"gcompris__{rcc.stem}__{Path(name).name}", data))
    for path in sorted(devset.TUXPAINT.rglob("*.png")):
        if f"tuxpaint:{path.relative_to(devset.TUXPAINT)}" not in used:
            candidates.append((f"tuxpaint__{path.parent.name}__{path.name}", path.read_bytes()))
    random.Random(0).shuffle(candidates)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in candidates[:limit]:
        (folder / name).write_bytes(data)
    return min(limit, len(candidates))


def top_classes(image_predictor: ImagePredictor, label_predictor: LabelPredictor, files: list[str]) -> np.ndarray:
    from image_tag_suggestion.tagging import tag_files

    results = list(tag_files(files, image_predictor, label_predictor, top_k=1))
    embeddings = np.stack([r.embedding for r in results])
    return label_predictor.scores(embeddings, calibrated=False)[:, : label_predictor.labels.n_classes].argmax(axis=1)


def encoder_speed(path: Path) -> str:
    rows = []
    for threads in (1, 2):
        encoder = TfliteEncoder(path, num_threads=threads)
        batch = np.random.default_rng(0).uniform(-1, 1, (16, encoder.input_size, encoder.input_size, 3)).astype(np.float32)
        batched = 16 / timed(lambda: encoder.encode(batch), 10)
        single = timed(lambda: encoder.encode(batch[:1]), 30)
        rows.append(f"{threads} thread{'s' if threads > 1 else ''}: {batched:6.1f} images/s batched, "
                    f"{single * 1e3:5.2f} ms for one")
    return "; ".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where to build the int8 bundle (default: a temp folder)")
    parser.add_argument("--devset", type=Path, default=devset.DEFAULT_OUT)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="int8-guard-"))
    out = args.out or work / "int8"
    count = representative_folder(work / "representative")
    start = time.perf_counter()
    build_default_bundle(out, representative=work / "representative")
    print(f"int8 bundle: {out} ({(out / 'encoder.tflite').stat().st_size / 1e6:.1f} MB encoder), built in "
          f"{time.perf_counter() - start:.0f} s from {count} representative images not in the dev set")

    photos = devset.load(args.devset)
    files = [str(args.devset / p.file) for p in photos] + [str(p) for p in source_photos()]
    bundles = {"float16": load_bundle(DEFAULT_CONFIG), "int8": load_bundle(out)}
    predictors = {name: (ImagePredictor(b), LabelPredictor(b)) for name, b in bundles.items()}
    tops = {name: top_classes(*pair, files) for name, pair in predictors.items()}
    agree = tops["float16"] == tops["int8"]
    held = [i for i, p in enumerate(photos) if p.split == "held-out"]
    print(f"\ntop-1 class agreement with float16: {agree.mean():.3f} of {len(files)} real photos "
          f"(dev set {agree[: len(photos)].mean():.3f}, its held-out part {agree[held].mean():.3f}, "
          f"PyPI test photos {agree[len(photos):].mean():.3f} of {len(files) - len(photos)})")

    judge = tag_quality.Judge(devset.Vocabulary())
    print("\n" + tag_quality.HEADER)
    for name, (image_predictor, label_predictor) in predictors.items():
        embeddings = tag_quality.embed(photos, args.devset, image_predictor)
        ranked = label_predictor.predict_batch(embeddings, top_k=tag_quality.TOP_K, min_score=0.0)
        shown = label_predictor.predict_batch(embeddings, top_k=tag_quality.TOP_K)
        for part in ("tune", "held-out"):
            rows = [i for i, p in enumerate(photos) if p.split == part]
            result = tag_quality.figures([photos[i] for i in rows], [shown[i] for i in rows],
                                         [ranked[i] for i in rows], judge)
            print(result.row(f"{name[:4]} {part[:4]}"))

    print("\nencoder speed (LiteRT/XNNPACK, this machine):")
    for name, bundle in bundles.items():
        print(f"  {name:8s} {encoder_speed(bundle.encoder_path)}")


if __name__ == "__main__":
    main()
