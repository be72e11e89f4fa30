"""Ranked tags -> what people take away: a table, CSV, JSON Lines, JSON.

Shared by the CLI (streaming, one result at a time) and the app (downloads).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Callable, Iterable, TextIO

from .tagging import TagResult

FORMATS = ("table", "csv", "jsonl")
CSV_COLUMNS = ["file", "rank", "label", "score", "id", "broader", "error"]


def record(result: TagResult) -> dict:
    """One result as a JSON-ready dict: ``{"file", "tags": [{"label", "score"}]}`` or ``{"file", "error"}``."""
    if not result.ok:
        return {"file": result.file, "error": result.error}
    return {"file": result.file, "tags": [{"label": t.label, "score": round(t.score, 4)} for t in result.tags]}


def csv_rows(result: TagResult) -> list[list]:
    if not result.ok:
        return [[result.file, "", "", "", "", "", result.error]]
    return [[result.file, rank, t.label, f"{t.score:.4f}", t.id, int(t.broader), ""] for rank, t in enumerate(result.tags, 1)]


def writer(kind: str, out: TextIO) -> Callable[[TagResult], None]:
    """A function that writes one result at a time to ``out`` in format ``kind``."""
    if kind == "jsonl":
        return lambda result: out.write(json.dumps(record(result), ensure_ascii=False) + "\n")
    if kind == "csv":
        rows = csv.writer(out, lineterminator="\n")
        rows.writerow(CSV_COLUMNS)
        return lambda result: rows.writerows(csv_rows(result))
    if kind == "table":
        def write(result: TagResult) -> None:
            out.write(f"{result.file}\n")
            if not result.ok:
                out.write(f"  error: {result.error}\n")
            for t in result.tags or []:
                out.write(f"  {t.score:6.3f}  {t.label}{'  (broader)' if t.broader else ''}\n")
        return write
    raise ValueError(f"unknown format {kind!r}; choose from {FORMATS}")


def to_csv(results: Iterable[TagResult]) -> str:
    buffer = io.StringIO()
    write = writer("csv", buffer)
    for result in results:
        write(result)
    return buffer.getvalue()


def to_json(results: Iterable[TagResult]) -> str:
    return json.dumps([record(r) for r in results], ensure_ascii=False, indent=2) + "\n"


def tag_line(result: TagResult) -> str:
    """The tags as one comma-separated line, for pasting into a photo manager."""
    return ", ".join(t.label for t in result.tags or [])
