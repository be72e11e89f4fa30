"""WordNet 3.0 nouns read straight from Debian's files (``wordnet-base``,
``wordnet-sense-index``; /usr/share/wordnet), for the broader-tag vocabulary.

Only what the vocabulary needs: each noun synset's lemmas, lexicographer file
and hypernyms (class and instance), and how often its senses occur in WordNet's
sense-tagged corpora (a cheap "is this an everyday word" signal).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_WORDNET_DIR = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
NOUN_TOPS_LEXFILE = 3  # "noun.Tops" in the lexnames list


@dataclass
class Synset:
    offset: int
    lexfile: int
    lemmas: list[str]
    hypernyms: list[int] = field(default_factory=list)
    tag_count: int = 0

    @property
    def wnid(self) -> str:
        return f"n{self.offset:08d}"

    @property
    def name(self) -> str:
        return self.lemmas[0].replace("_", " ")


def read_nouns(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR) -> dict[int, Synset]:
    """All noun synsets by offset, with tag counts filled in."""
    wordnet_dir = Path(wordnet_dir)
    data_file = wordnet_dir / "data.noun"
    if not data_file.is_file():
        raise FileNotFoundError(
            f"{data_file} not found: install Debian's wordnet-base and wordnet-sense-index, or set WORDNET_DIR"
        )
    synsets: dict[int, Synset] = {}
    with open(data_file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, lexfile = int(fields[0]), int(fields[1])
            word_count = int(fields[3], 16)
            lemmas = [_strip_marker(fields[4 + 2 * i]) for i in range(word_count)]
            position = 4 + 2 * word_count
            pointer_count = int(fields[position])
            hypernyms = []
            for p in range(pointer_count):
                symbol, target, pos = fields[position + 1 + 4 * p : position + 4 + 4 * p]
                if symbol in ("@", "@i") and pos == "n":
                    hypernyms.append(int(target))
            synsets[offset] = Synset(offset, lexfile, lemmas, hypernyms)
    for offset, count in _noun_tag_counts(wordnet_dir).items():
        if offset in synsets:
            synsets[offset].tag_count += count
    return synsets


def _strip_marker(lemma: str) -> str:
    return lemma.split("(", 1)[0]  # adjective markers such as "(p)" never occur on nouns, but be safe


def _noun_tag_counts(wordnet_dir: Path) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    index = wordnet_dir / "index.sense"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found: install Debian's wordnet-sense-index")
    with open(index, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            sense_key, offset, _sense_number, tag_count = line.split()
            if "%1:" in sense_key:  # ss_type 1: noun
                counts[int(offset)] += int(tag_count)
    return counts


def ancestors(synsets: dict[int, Synset], offset: int) -> set[int]:
    """Every hypernym above ``offset`` (transitively), not including itself."""
    seen: set[int] = set()
    stack = list(synsets[offset].hypernyms)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(synsets[current].hypernyms)
    return seen


def offset_of(wnid: str) -> int:
    if not (len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit()):
        raise ValueError(f"{wnid!r} is not a WordNet noun id like n02123045")
    return int(wnid[1:])
