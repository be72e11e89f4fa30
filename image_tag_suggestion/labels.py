"""The label table of a bundle: which tags exist and what each one is made of.

Two sorts of tag live in one table, classes first:
- a *class* has an embedding row (and optionally a bias): it is scored directly;
- a *broader* tag (WordNet parent such as "dog") has no row of its own: its score
  is the sum of the scores of its member classes.
Ids are the stable keys (WordNet ids, Open Images MIDs, user tags); names are for
people and may change. Arrays are ``.npy`` files (no pickle); names are JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LABELS_FILE = "labels.json"
EMBEDDINGS_FILE = "label_embeddings.npy"
BIAS_FILE = "label_bias.npy"


@dataclass
class LabelTable:
    """Tags of a bundle.

    Attributes:
        class_ids, class_names: one per embedding row.
        embeddings: float32 (n_classes, D).
        bias: float32 (n_classes,) or None.
        broader_ids, broader_names: the broader tags.
        broader_members: for each broader tag, the indices of the classes under it.
    """

    class_ids: list[str]
    class_names: list[str]
    embeddings: np.ndarray
    bias: np.ndarray | None = None
    broader_ids: list[str] = field(default_factory=list)
    broader_names: list[str] = field(default_factory=list)
    broader_members: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.bias is not None:
            self.bias = np.asarray(self.bias, dtype=np.float32)
        self.validate()
        self.ids = list(self.class_ids) + list(self.broader_ids)
        self.names = list(self.class_names) + list(self.broader_names)
        self.is_broader = np.zeros(len(self.ids), dtype=bool)
        self.is_broader[self.n_classes :] = True
        # Dense 0/1 matrix: broader scores are one matmul (1000 x 338 is 1.3 MB).
        self.membership = np.zeros((self.n_classes, len(self.broader_ids)), dtype=np.float32)
        for column, members in enumerate(self.broader_members):
            self.membership[members, column] = 1.0
        self.coverage = np.concatenate([np.ones(self.n_classes), self.membership.sum(axis=0)]).astype(np.float32)

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self) -> None:
        problems = []
        n = len(self.class_ids)
        if n == 0:
            problems.append("the table has no classes")
        if len(self.class_names) != n:
            problems.append(f"{len(self.class_names)} class names for {n} class ids")
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            problems.append(f"embeddings have shape {self.embeddings.shape}, expected ({n}, D)")
        elif not np.all(np.isfinite(self.embeddings)):
            problems.append("embeddings contain NaN or infinity")
        if self.bias is not None and self.bias.shape != (n,):
            problems.append(f"bias has shape {self.bias.shape}, expected ({n},)")
        if not (len(self.broader_ids) == len(self.broader_names) == len(self.broader_members)):
            problems.append("broader ids, names and members differ in length")
        for tag, members in zip(self.broader_ids, self.broader_members):
            if not members or min(members) < 0 or max(members) >= n:
                problems.append(f"broader tag {tag!r} has members outside 0..{n - 1} or none")
                break
        all_ids = list(self.class_ids) + list(self.broader_ids)
        if len(set(all_ids)) != len(all_ids):
            duplicates = sorted({i for i in all_ids if all_ids.count(i) > 1})
            problems.append(f"duplicate tag ids: {duplicates[:5]}")
        if problems:
            raise ValueError("invalid label table: " + "; ".join(problems))

    def save(self, folder: str | Path, embeddings_dtype=np.float16) -> list[str]:
        """Write the table into ``folder``; returns the file names written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        document = {
            "classes": [{"id": i, "name": n} for i, n in zip(self.class_ids, self.class_names)],
            "broader": [
                {"id": i, "name": n, "members": [int(m) for m in members]}
                for i, n, members in zip(self.broader_ids, self.broader_names, self.broader_members)
            ],
        }
        (folder / LABELS_FILE).write_text(json.dumps(document, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        np.save(folder / EMBEDDINGS_FILE, self.embeddings.astype(embeddings_dtype))
        written = [LABELS_FILE, EMBEDDINGS_FILE]
        if self.bias is not None:
            np.save(folder / BIAS_FILE, self.bias.astype(np.float32))
            written.append(BIAS_FILE)
        return written

    @classmethod
    def load(cls, folder: str | Path) -> "LabelTable":
        folder = Path(folder)
        try:
            document = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
            classes = document["classes"]
            broader = document.get("broader", [])
            embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False)
            bias_path = folder / BIAS_FILE
            bias = np.load(bias_path, allow_pickle=False) if bias_path.exists() else None
            return cls(
                class_ids=[str(c["id"]) for c in classes],
                class_names=[str(c["name"]) for c in classes],
                embeddings=embeddings,
                bias=bias,
                broader_ids=[str(b["id"]) for b in broader],
                broader_names=[str(b["name"]) for b in broader],
                broader_members=[list(map(int, b["members"])) for b in broader],
            )
        except FileNotFoundError as exc:
            raise ValueError(f"label table in {folder}: missing file {Path(exc.filename).name}") from None
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"label table in {folder}: malformed {LABELS_FILE} ({exc!r})") from None
