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
CSV_COLUMNS = ["file", "rank", "label", "score", "id", "broader", "model", "error"]


def groups(result: TagResult, main_model: str | None = None) -> list[tuple[str | None, list]]:
    """(model name, tags) for the main model then each other one; the name is None with one model."""
    if not result.more:
        return [(None, result.tags or [])]
    return [(main_model, result.tags or []), *result.more.items()]


def record(result: TagResult, main_model: str | None = None) -> dict:
    """One result as a JSON-ready dict: ``{"file", "tags": [{"label", "score"}]}`` or ``{"file", "error"}``.

    With several models each tag also names its ``model``; tags stay grouped by model.
    """
    if not result.ok:
        return {"file": result.file, "error": result.error}
    tags = []
    for model, group in groups(result, main_model):
        for t in group:
            tags.append({"label": t.label, "score": round(t.score, 4), **({"model": model} if model else {})})
    return {"file": result.file, "tags": tags}


def csv_rows(result: TagResult, main_model: str | None = None) -> list[list]:
    if not result.ok:
        return [[result.file, "", "", "", "", "", "", result.error]]
    return [[result.file, rank, t.label, f"{t.score:.4f}", t.id, int(t.broader), model or "", ""]
            for model, group in groups(result, main_model) for rank, t in enumerate(group, 1)]


def writer(kind: str, out: TextIO, main_model: str | None = None) -> Callable[[TagResult], None]:
    """A function that writes one result at a time to ``out`` in format ``kind``.

    ``main_model``: the name the first model's tags carry when results hold several models.
    """
    if kind == "jsonl":
        return lambda result: out.write(json.dumps(record(result, main_model), ensure_ascii=False) + "\n")
    if kind == "csv":
        rows = csv.writer(out, lineterminator="\n")
        rows.writerow(CSV_COLUMNS)
        return lambda result: rows.writerows(csv_rows(result, main_model))
    if kind == "table":
        def write(result: TagResult) -> None:
            out.write(f"{result.file}\n")
            if not result.ok:
                out.write(f"  error: {result.error}\n")
                return
            for model, group in groups(result, main_model):
                if model:
                    out.write(f"  [{model}]\n")
                for t in group:
                    out.write(f"  {t.score:6.3f}  {t.label}{'  (broader)' if t.broader else ''}\n")
        return write
    raise ValueError(f"unknown format {kind!r}; choose from {FORMATS}")


def to_csv(results: Iterable[TagResult], main_model: str | None = None) -> str:
    buffer = io.StringIO()
    write = writer("csv", buffer, main_model)
    for result in results:
        write(result)
    return buffer.getvalue()


def to_json(results: Iterable[TagResult], main_model: str | None = None) -> str:
    return json.dumps([record(r, main_model) for r in results], ensure_ascii=False, indent=2) + "\n"


def tag_line(tags) -> str:
    """Tags as one comma-separated line, for pasting into a photo manager."""
    return ", ".join(t.label for t in tags or [])
