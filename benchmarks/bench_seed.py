"""Serving the original app's model after ``image-tags import-seed``, against the seed's own
way, in one run (prints figures, asserts nothing; needs the build extra and tf-keras):

    .venv/bin/python benchmarks/bench_seed.py [--labels 20000] [--repeat 10]

For each variant (pooled: 2,560 values; projected: 50), seed-format files are written
(full-width MobileNetV2 with random weights and batch-norm statistics from real photos,
``--labels`` random label embeddings), imported (timed), and one 12-MP JPEG goes to its top
20 tags, median of warm runs:
- ours: reduced-scale JPEG decode, LiteRT, one matrix product for every label;
- the seed's way: full decode, its preprocessing, the Keras 2 model called on the image,
  every label scored in a Python loop over ``labels.json``'s entries, then sorted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench_serving import source_photos, timed
from seed_files import seed_input, seed_model, set_statistics_from


def write_labels(path: Path, count: int, dim: int, rng: np.random.Generator) -> None:
    """``{"label 0": [...], ...}`` as the seed's labels.json, written row by row (it is large)."""
    with open(path, "w", encoding="utf-8") as out:
        out.write("{")
        for i in range(count):
            row = rng.normal(size=dim) / np.sqrt(dim)
            out.write(("," if i else "") + json.dumps(f"label {i}") + ":[" + ",".join(f"{v:.6f}" for v in row) + "]")
        out.write("}")


def seed_way(h5: Path, labels_json: Path, photo: Path):
    """The seed's serving path: its model loaded by Keras 2 (its Lambda runs: our own file),
    labels scored one by one in Python."""
    import tf_keras as k2

    import seed_files

    model = k2.models.load_model(h5, custom_objects={"K": seed_files.K}, compile=False)
    labels = {name: np.asarray(row, np.float32) for name, row in json.loads(labels_json.read_text()).items()}

    def run():
        embedding = np.asarray(model(seed_input(Image.open(photo))[None], training=False))[0]
        scored = [(name, 1.0 - float(np.sum((embedding - row) ** 2)) / 4.0) for name, row in labels.items()]
        return sorted(scored, key=lambda item: -item[1])[:20]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description="imported seed model vs the seed's way (prints figures)")
    parser.add_argument("--labels", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    from image_tag_suggestion import ImagePredictor, LabelPredictor, load_bundle

    work = Path(tempfile.mkdtemp(prefix="bench-seed-"))
    photos = source_photos()
    big = work / "twelve_mp.jpg"
    Image.open(photos[0]).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(big, quality=92)
    print(f"12-MP JPEG {big.stat().st_size / 1e6:.1f} MB; {args.labels} labels per model\n")
    for variant in ("pooled", "projected"):
        folder = work / variant
        folder.mkdir()
        model = seed_model(variant, alpha=1.0)
        set_statistics_from(model, np.stack([seed_input(p) for p in photos[:8]]))
        model.save(folder / "image_representation.h5")
        dim = int(model.output_shape[-1])
        write_labels(folder / "labels.json", args.labels, dim, np.random.default_rng(0))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "image_tag_suggestion.cli", "import-seed", "--h5",
                        str(folder / "image_representation.h5"), "--labels", str(folder / "labels.json"), "--out",
                        str(folder / "bundle")], check=True, capture_output=True)
        import_s = time.perf_counter() - start
        bundle = load_bundle(folder / "bundle")
        image_predictor, label_predictor = ImagePredictor(bundle), LabelPredictor(bundle)

        def ours():
            return label_predictor.predict_from_array(image_predictor.predict_from_file(big)[0], top_k=20)

        ours_s = timed(ours, args.repeat)
        seed_s = timed(seed_way(folder / "image_representation.h5", folder / "labels.json", big), max(3, args.repeat // 3))
        top_ours = [t.label for t in ours()]
        print(f"{variant} ({args.labels} labels x {dim}): import {import_s:.1f} s "
              f"(labels.json {(folder / 'labels.json').stat().st_size / 1e6:.0f} MB)")
        unit = np.full(dim, 1 / np.sqrt(dim), np.float32)
        rank_s = timed(lambda: label_predictor.predict_from_array(unit, top_k=20, min_score=0.0), args.repeat)
        print(f"  warm latency, 12-MP JPEG -> top 20: ours {ours_s * 1e3:.1f} ms, the seed's way {seed_s * 1e3:.1f} ms "
              f"({seed_s / ours_s:.1f}x); of ours, ranking every label {rank_s * 1e3:.2f} ms")
        print(f"  our top 3: {top_ours[:3]}")
    print(f"\n(peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
