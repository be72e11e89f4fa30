"""A photo collection's index: per image its path, size, mtime, content hash,
embedding and tags with scores, in one SQLite file.

Why SQLite: it ships with Python, every language and many GUI tools read it, and
an incremental re-index is a handful of row updates in a transaction (a columnar
file such as Parquet would be rewritten whole). Embeddings are float16 blobs.

    image-tags index photos/ --out photos.sqlite
    image-tags search photos.sqlite dog
    image-tags similar photos.sqlite query.jpg
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .bundle import Bundle, sha256_of
from .labels import find_word, normalise_word
from .predictors import ImagePredictor, LabelPredictor
from .tagging import find_images, tag_files

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,      -- absolute path
    size INTEGER NOT NULL,          -- bytes
    mtime REAL NOT NULL,            -- seconds since the epoch
    sha256 TEXT NOT NULL,           -- of the file's content
    error TEXT,                     -- why it could not be tagged; NULL when it was
    embedding BLOB                  -- float16, the encoder's embedding_dim values (no face or pixel signals)
);
CREATE TABLE IF NOT EXISTS tags (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag_id TEXT NOT NULL,
    score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_by_tag ON tags (tag_id, score DESC);
CREATE INDEX IF NOT EXISTS tags_by_image ON tags (image_id);
CREATE TABLE IF NOT EXISTS labels (tag_id TEXT PRIMARY KEY, label TEXT NOT NULL, broader INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS words (      -- what search answers to: names, bare names, synonyms, ids
    word TEXT NOT NULL,                 -- lower case
    tag_id TEXT NOT NULL REFERENCES labels(tag_id)
);
CREATE INDEX IF NOT EXISTS words_by_word ON words (word);
"""
TABLES = {"meta", "images", "tags", "labels", "words"}
FORMAT_VERSION = "2"
#: Tags stored per image: the best ones, down to this score. Search ranks by them and, by
#: default, answers with the photos whose tag reaches the model's "likely" cut-off.
STORED_TAGS, STORED_MIN_SCORE = 50, 0.001


class CollectionError(ValueError):
    """The index is missing, made with another model, or the query cannot be answered."""


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, {self.removed} removed, "
                f"{len(self.failed)} failed")


def model_fingerprint(bundle: Bundle) -> str:
    """Changes whenever stored tags or scores would: another file, another scoring or cut-off."""
    what = {key: bundle.config.get(key) for key in ("files", "scoring", "ranking", "faces")}
    if bundle.config.get("properties"):  # only where set: an index of a bundle without them keeps its fingerprint
        what["properties"] = bundle.config["properties"]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def connect(index: str | os.PathLike, create: bool = False) -> sqlite3.Connection:
    """Open an index: read-only to search it, read-write (``create``) to build it. A file that
    is not an index of ours is refused, never written to."""
    path = Path(index)
    if not create and not path.is_file():
        raise CollectionError(f"{path}: no such index (make one with: image-tags index FOLDER --out {path})")
    try:
        if create:
            if path.is_file() and path.stat().st_size > 0:
                _check_is_index(_read_only(path), path, unfinished=True).close()
            connection = sqlite3.connect(path)
            connection.execute("PRAGMA foreign_keys = ON")
            connection.executescript(f"BEGIN; {SCHEMA} COMMIT;")  # all tables or none, even if killed here
            return connection
        return _check_is_index(_read_only(path), path)
    except sqlite3.DatabaseError as exc:
        raise CollectionError(f"{path}: not an image-tags index ({exc})") from None


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _check_is_index(connection: sqlite3.Connection, path: Path, unfinished: bool = False) -> sqlite3.Connection:
    """``connection`` if it opens an index of ours; ``unfinished``: also one whose making was cut
    short (some of our tables, all empty: a run killed while it made them, before the schema was
    made in one transaction), which a run may finish, as nothing in it can be lost."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    cut_short = unfinished and tables <= TABLES and not any(
        connection.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in tables)
    if not ({"meta", "images", "tags", "labels"} <= tables or cut_short):
        connection.close()
        raise CollectionError(f"{path}: not an image-tags index (it has no tables images, tags, labels, meta); "
                              "choose another file")
    return connection


def build_index(
    roots: Sequence[str | os.PathLike],
    index: str | os.PathLike,
    image_predictor: ImagePredictor,
    label_predictor: LabelPredictor,
    batch_size: int = 32,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
    engine: str = "local",
    on_wait: Callable[[str], None] | None = None,
) -> IndexReport:
    """Index every image under ``roots``: new, changed and previously failed files are tagged,
    files that disappeared from under the roots are dropped.

    A file that fails is stored as failed (with its reason) and tried again by every later
    run, counted under "failed" until it succeeds. Only one run works on an index at a time:
    a second one waits for the first (``on_wait`` is told why) and then finds its work done.
    ``engine="ray"`` tags the files on Ray Data workers (``ray_engine.py``) instead of this
    process; the index written is the same.
    """
    if engine not in ("local", "ray"):
        raise CollectionError(f"unknown engine {engine!r}; choose local or ray")
    with _exclusive(index, on_wait):
        connection = connect(index, create=True)
        try:
            with connection:
                _check_model(connection, image_predictor.bundle, label_predictor)
            report = IndexReport()
            files = [os.path.abspath(f) for f in find_images(roots)]
            todo = _plan(connection, files, report)
            report.removed = _drop_missing(connection, roots, set(files))
            if on_start:
                on_start(len(todo))
            results = _tag(list(todo), image_predictor, label_predictor, batch_size, on_done, engine)
            _store_results(connection, results, todo, image_predictor.visual_dim, batch_size, report)
        finally:
            connection.close()
    return report


@contextlib.contextmanager
def _exclusive(index: str | os.PathLike, on_wait: Callable[[str], None] | None):
    """Hold an exclusive lock on the index file for a whole run (an advisory ``flock``, which
    SQLite's own byte-range locks do not see). The descriptor is closed only after the run's
    connection is: closing another descriptor of the file while SQLite holds its locks would
    drop them."""
    handle = os.open(index, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"{index}: another image-tags index run is working on this index; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def _plan(connection: sqlite3.Connection, files: list[str], report: IndexReport) -> dict[str, tuple]:
    """Which files need tagging, with their (size, mtime, sha256, is_new): new ones, changed ones
    and those that failed before. Unchanged and merely touched files are counted, not tagged."""
    known = {row[0]: row[1:] for row in connection.execute("SELECT path, size, mtime, sha256, id, error FROM images")}
    todo = {}
    for path in files:
        try:
            stat = os.stat(path)
            previous = known.get(path)
            failed_before = previous is not None and previous[4] is not None
            if previous and not failed_before and (previous[0], previous[1]) == (stat.st_size, stat.st_mtime):
                report.unchanged += 1
                continue
            digest = sha256_of(path)
        except OSError as exc:
            report.failed.append(f"{path}: {exc.strerror}")
            continue
        if previous and not failed_before and previous[2] == digest:  # touched, not changed
            with connection:
                connection.execute("UPDATE images SET size = ?, mtime = ? WHERE id = ?",
                                    (stat.st_size, stat.st_mtime, previous[3]))
            report.unchanged += 1
            continue
        todo[path] = (stat.st_size, stat.st_mtime, digest, previous is None)
    return todo


def _drop_missing(connection: sqlite3.Connection, roots: Sequence[str | os.PathLike], present: set[str]) -> int:
    """Forget the files under ``roots`` that are gone; files indexed from other roots stay."""
    roots_abs = [os.path.abspath(r) for r in roots]
    gone = [path for (path,) in connection.execute("SELECT path FROM images")
            if path not in present and any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots_abs)]
    with connection:
        connection.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in gone])
    return len(gone)


def _tag(todo: list[str], image_predictor: ImagePredictor, label_predictor: LabelPredictor, batch_size: int,
         on_done: Callable[[int], None] | None, engine: str):
    """The files' tags, in this process or on Ray workers."""
    if engine == "ray":
        from .ray_engine import tag_files_on_ray

        return tag_files_on_ray(todo, image_predictor.bundle, top_k=STORED_TAGS, min_score=STORED_MIN_SCORE,
                                batch_size=batch_size, on_done=on_done)
    return tag_files(todo, image_predictor, label_predictor, top_k=STORED_TAGS, min_score=STORED_MIN_SCORE,
                     order="score", batch_size=batch_size, on_done=on_done)


def _store_results(connection: sqlite3.Connection, results, todo: dict[str, tuple], visual_dim: int,
                   batch_size: int, report: IndexReport) -> None:
    """Write results as they come, a transaction per batch, and count them."""
    pending = []
    for result in results:
        size, mtime, digest, is_new = todo[result.file]
        # Only the encoder's part: similarity compares what photos show, not their face or pixel signals.
        embedding = result.embedding[:visual_dim].astype(np.float16).tobytes() if result.ok else None
        pending.append((result, size, mtime, digest, embedding))
        if result.ok:
            report.added += is_new
            report.updated += not is_new
        else:
            report.failed.append(result.error)
        if len(pending) >= batch_size:
            _store(connection, pending)
            pending = []
    _store(connection, pending)


def _store(connection: sqlite3.Connection, rows) -> None:
    """One transaction per batch: an interrupted run keeps what it finished."""
    with connection:
        for result, size, mtime, digest, embedding in rows:
            connection.execute("DELETE FROM images WHERE path = ?", (result.file,))
            cursor = connection.execute(
                "INSERT INTO images (path, size, mtime, sha256, error, embedding) VALUES (?, ?, ?, ?, ?, ?)",
                (result.file, size, mtime, digest, result.error, embedding))
            if result.ok:
                connection.executemany("INSERT INTO tags (image_id, tag_id, score) VALUES (?, ?, ?)",
                                       [(cursor.lastrowid, t.id, t.score) for t in result.tags])


def _check_model(connection: sqlite3.Connection, bundle: Bundle, label_predictor: LabelPredictor) -> None:
    meta = dict(connection.execute("SELECT key, value FROM meta"))
    fingerprint = model_fingerprint(bundle)
    if meta:
        _check_format(meta, connection)
    if meta and meta.get("model_fingerprint") != fingerprint:
        raise CollectionError(f"this index was made with the model {meta.get('model_name')!r} ({meta.get('model_path')}), "
                              "or another version of it whose scores differ; index with that model, or start a new index")
    if not meta:
        connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
            ("format_version", FORMAT_VERSION), ("model_name", bundle.name), ("model_path", str(bundle.folder)),
            ("model_fingerprint", fingerprint), ("embedding_dim", str(bundle.embedding_dim)),
            ("min_score", repr(bundle.min_score)),
        ])
        labels = label_predictor.labels
        connection.executemany("INSERT OR REPLACE INTO labels (tag_id, label, broader) VALUES (?, ?, ?)",
                               [(i, n, int(b)) for i, n, b in zip(labels.ids, labels.names, labels.is_broader)])
        connection.executemany("INSERT INTO words (word, tag_id) VALUES (?, ?)",
                               [(word, labels.ids[index]) for word, index in labels.words()])


def _check_format(meta: dict[str, str], connection: sqlite3.Connection) -> None:
    if meta.get("format_version") != FORMAT_VERSION:
        raise CollectionError(f"{connection_path(connection)}: this index was made by an older version of image-tags "
                              f"(format {meta.get('format_version')}, now {FORMAT_VERSION}); start a new index")


def connection_path(connection: sqlite3.Connection) -> str:
    return connection.execute("PRAGMA database_list").fetchone()[2]


def index_meta(index: str | os.PathLike) -> dict[str, str]:
    connection = connect(index)
    try:
        return dict(connection.execute("SELECT key, value FROM meta"))
    finally:
        connection.close()


@dataclass
class Hit:
    path: str
    score: float


def search_tag(index: str | os.PathLike, query: str, top_k: int = 20,
               min_score: float | None = None) -> tuple[str, list[Hit]]:
    """Images ranked by the score of the tag(s) ``query`` names; returns (the tags' labels, hits).

    ``query`` may be a tag's name, its name without a sense note ("car" finds "car" and
    "car (railcar)"), a synonym ("alsatian") or an id, in any case, singular or plural.
    A photo matched by several tags ranks by its best score. ``min_score`` None: only
    photos where the tag reaches the model's "likely" cut-off; 0: every stored tag.
    Unknown words raise with the nearest known ones.
    """
    connection = connect(index)
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta"))
        _check_format(meta, connection)
        min_score = float(meta.get("min_score", 0.0)) if min_score is None else min_score

        def lookup(word: str) -> list[str]:
            return [r[0] for r in connection.execute("SELECT DISTINCT tag_id FROM words WHERE word = ?", (word,))]

        tag_ids = find_word(query, lookup)
        if not tag_ids:
            words = [r[0] for r in connection.execute("SELECT DISTINCT word FROM words WHERE word NOT GLOB 'n[0-9]*'")]
            wanted = normalise_word(query)
            near = difflib.get_close_matches(wanted, words, n=5, cutoff=0.6)
            near += [w for w in words if wanted in w and w not in near][: 5 - len(near)]
            hint = ", ".join(near) if near else "none close; try a broader word such as 'animal' or 'vehicle'"
            raise CollectionError(f"unknown tag {query!r}; nearest known tags: {hint}")
        marks = ",".join("?" * len(tag_ids))
        labels = [r[0] for r in connection.execute(
            f"SELECT label FROM labels WHERE tag_id IN ({marks}) ORDER BY label", tag_ids)]
        rows = connection.execute(
            f"SELECT images.path, max(tags.score) AS best FROM tags JOIN images ON images.id = tags.image_id "
            f"WHERE tags.tag_id IN ({marks}) AND tags.score >= ? GROUP BY images.id ORDER BY best DESC LIMIT ?",
            (*tag_ids, min_score, top_k)).fetchall()
        return " / ".join(labels), [Hit(p, s) for p, s in rows]
    finally:
        connection.close()


class EmbeddingMatrix:
    """All embeddings of an index in memory, unit-normalised float32, for exact similarity search.

    float32 because BLAS multiplies it at full speed (float16 would need a conversion
    per query, slower than the product); 1280-d embeddings cost 5 KB per image.
    """

    def __init__(self, paths: list[str], embeddings: np.ndarray):
        self.paths = paths
        self.unit = np.empty(embeddings.shape, np.float32)
        for start in range(0, len(embeddings), 65536):  # normalise in chunks: no float64 copy of it all
            block = embeddings[start : start + 65536].astype(np.float32)
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            self.unit[start : start + 65536] = block

    @classmethod
    def load(cls, index: str | os.PathLike) -> "EmbeddingMatrix":
        connection = connect(index)
        try:
            meta = dict(connection.execute("SELECT key, value FROM meta"))
            _check_format(meta, connection)
            dim = int(meta["embedding_dim"])
            rows = connection.execute("SELECT path, embedding FROM images WHERE embedding IS NOT NULL ORDER BY id").fetchall()
        finally:
            connection.close()
        embeddings = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), dim)
        return cls([r[0] for r in rows], embeddings)

    def nearest(self, query: np.ndarray, top_k: int = 20) -> list[Hit]:
        """Cosine similarity, exact: one matrix-vector product, then a partial sort. A query
        longer than the stored embeddings (with face or pixel signals at the end) is cut to them."""
        query = np.asarray(query, np.float32)[: self.unit.shape[1]]
        query = (query / max(float(np.linalg.norm(query)), 1e-12)).astype(np.float32)
        scores = self.unit @ query
        k = min(top_k, len(scores))
        if k == 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [Hit(self.paths[i], float(scores[i])) for i in best]
