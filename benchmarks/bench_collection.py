"""Collection benchmarks (prints figures, asserts nothing):

    .venv/bin/python benchmarks/bench_collection.py [--photos 300] [--skip-1m]

- indexing throughput on a folder of camera-size JPEGs (4000x3000, made from the test
  photos), and an incremental re-index after 1% of the files changed;
- search by tag in SQLite with 100,000 indexed images (20 tags each);
- exact similarity search over 100,000 and 1,000,000 embeddings of the built-in model
  (1280-d, float16), and faiss (IVF + product quantisation) at 1,000,000 for comparison,
  with its recall@10 against the exact answer. The synthetic embeddings are clustered
  (2,000 centres plus noise), closer to real photo embeddings than uniform noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import source_photos, timed  # noqa: E402

from image_tag_suggestion import ImagePredictor, LabelPredictor  # noqa: E402
from image_tag_suggestion.collection import SCHEMA, EmbeddingMatrix, build_index, search_tag  # noqa: E402

DIM = 1280


def median_ms(fn, repeat=10) -> float:
    return timed(fn, repeat) * 1000


def clustered(n: int, rng, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, DIM), np.float16)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        picks = centres[rng.integers(0, len(centres), m)]
        out[start : start + m] = picks + rng.normal(scale=0.6, size=(m, DIM)).astype(np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="collection benchmarks (prints figures)")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--skip-1m", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-collection-"))
    image_predictor, label_predictor = ImagePredictor.init_from_config_path(), LabelPredictor.init_from_config_path()

    # 1. Indexing real-size JPEGs.
    folder = work / "photos"
    folder.mkdir()
    sources = [Image.open(p).convert("RGB").resize((4000, 3000), Image.Resampling.BILINEAR) for p in source_photos()[:12]]
    for i in range(args.photos):
        image = sources[i % len(sources)]
        (image if i < len(sources) else image.rotate(i % 7 - 3)).save(folder / f"IMG_{i:05d}.jpg", quality=88)
    size_mb = sum(p.stat().st_size for p in folder.iterdir()) / len(list(folder.iterdir())) / 1e6
    index = work / "photos.sqlite"
    start = time.perf_counter()
    report = build_index([folder], index, image_predictor, label_predictor)
    full = time.perf_counter() - start
    print(f"indexing {report.added} 12-MP JPEGs ({size_mb:.1f} MB each): {report.added / full:.1f} images/s ({full:.1f} s)")
    changed = sorted(folder.iterdir())[: max(1, args.photos // 100)]
    for path in changed:
        sources[0].rotate(45).save(path, quality=88)
    start = time.perf_counter()
    report = build_index([folder], index, image_predictor, label_predictor)
    print(f"re-index after {len(changed)} of {args.photos} files changed ({report.summary()}): "
          f"{time.perf_counter() - start:.2f} s (full index {full:.1f} s)")

    # 2. Search by tag, 100k images.
    rng = np.random.default_rng(0)
    big = work / "big.sqlite"
    db = sqlite3.connect(big)
    db.executescript(SCHEMA)
    labels = label_predictor.labels
    db.executemany("INSERT INTO labels VALUES (?, ?, ?)", [(i, n, int(b)) for i, n, b in zip(labels.ids, labels.names, labels.is_broader)])
    db.executemany("INSERT INTO images (id, path, size, mtime, sha256) VALUES (?, ?, 0, 0, '')",
                   [(i, f"/photos/{i:06d}.jpg") for i in range(100_000)])
    tag_ids = np.array(labels.ids)
    rows = ((i, tag_ids[t], float(s)) for i in range(100_000)
            for t, s in zip(rng.integers(0, len(tag_ids), 20), rng.random(20)))
    db.executemany("INSERT INTO tags VALUES (?, ?, ?)", rows)
    db.commit()
    db.close()
    print(f"search by tag, 100,000 images x 20 tags: {median_ms(lambda: search_tag(big, 'dog', 20)):.2f} ms "
          "(opening the file included)")

    # 3. Similar: exact at 100k and 1M, faiss at 1M.
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    sizes = [100_000] if args.skip_1m else [100_000, 1_000_000]
    for n in sizes:
        embeddings = clustered(n, rng, centres)
        matrix = EmbeddingMatrix([f"{i}" for i in range(n)], embeddings)
        query = embeddings[12345].astype(np.float32) + rng.normal(scale=0.3, size=DIM).astype(np.float32)
        print(f"exact similar search, {n:,} x {DIM}-d (float32 in memory, {matrix.unit.nbytes / 1e9:.2f} GB): "
              f"{median_ms(lambda: matrix.nearest(query, 20)):.1f} ms")
    try:
        import faiss
    except ImportError:
        print("faiss: not installed (pip install faiss-cpu) - skipped")
        return
    unit = matrix.unit
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    picked = rng.choice(len(unit), 100, replace=False)
    queries = unit[picked] + rng.normal(scale=0.02, size=(100, DIM)).astype(np.float32)
    exact = [{int(h.path) for h in matrix.nearest(q, 10)} for q in queries]
    sample = unit[rng.choice(len(unit), 60_000, replace=False)]
    for factory, nprobe in (("IVF1024,Flat", 16), ("IVF1024,PQ64", 16)):
        start = time.perf_counter()
        ann = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
        ann.train(sample)
        for begin in range(0, len(unit), 100_000):
            ann.add(unit[begin : begin + 100_000])
        built = time.perf_counter() - start
        ann.nprobe = nprobe
        _, found = ann.search(queries, 10)
        recall = np.mean([len(e & set(f.tolist())) / 10 for e, f in zip(exact, found)])
        itself = np.mean([p in set(f.tolist()) for p, f in zip(picked, found)])
        latency = median_ms(lambda: ann.search(queries[:1], 20), repeat=50)
        print(f"faiss {factory} (nprobe {nprobe}) over {len(unit):,}: {latency:.2f} ms per query, recall@10 against "
              f"exact {recall:.2f}, finds the query's own photo {itself:.2f}, built in {built:.0f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
