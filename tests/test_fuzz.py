"""Thousands of mutated JPEG, PNG, GIF, WebP, TIFF, AVIF and HEIC files: the decoder says
ImageError or decodes, nothing else, and its memory stays bounded by max_pixels."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_mutated_files_give_image_errors_and_bounded_memory():
    out = subprocess.run([sys.executable, str(HERE / "fuzz_images.py"), "60", "4000", "4000000"],
                         capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["cases"] >= 2000, summary
    assert summary["n_other"] == 0, summary["other"]
    assert summary["image_errors"] > 0 and summary["decoded"] > 0
    # 4 MP at most: 12 MB of RGB; the model-free process and Pillow's buffers stay far under this.
    assert summary["peak_rss_mb"] < 300, summary


def test_a_run_over_mutated_files_reports_each_and_goes_on(tmp_path, default_predictors):
    from image_tag_suggestion.tagging import tag_files

    sys.path.insert(0, str(HERE))
    import fuzz_images

    rng = random.Random(1)
    originals = fuzz_images.seeds()
    files = []
    for i in range(70):
        fmt = fuzz_images.FORMATS[i % len(fuzz_images.FORMATS)]
        path = tmp_path / f"{i:03d}.{fmt.lower()}"
        path.write_bytes(fuzz_images.mutate(originals[fmt], rng) if i % 5 else originals[fmt])
        files.append(str(path))
    results = list(tag_files(files, *default_predictors, batch_size=8))
    assert [r.file for r in results] == files
    assert all((r.tags is None) != (r.error is None) for r in results)
    assert sum(r.ok for r in results) >= 14  # the untouched originals at least
