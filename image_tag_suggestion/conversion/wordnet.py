"""WordNet 3.0 nouns read straight from Debian's files (``wordnet-base``,
``wordnet-sense-index``; /usr/share/wordnet), for the tag vocabulary.

Only what the vocabulary needs: each noun synset's lemmas, lexicographer file,
hypernyms (class and instance) and hyponyms, and how often each lemma was used in
that sense in WordNet's sense-tagged corpora (the "word people use" signal: the
most frequent lemma names a synset, and a synset no corpus ever tagged is jargon).
Synsets are also reachable by their readable keys, ``dog.n.01`` (lemma, part of
speech, sense number in WordNet's own order).
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
    hyponyms: list[int] = field(default_factory=list)
    lemma_counts: list[int] = field(default_factory=list)  # tagged-corpus uses of each lemma in this sense

    @property
    def wnid(self) -> str:
        return f"n{self.offset:08d}"

    @property
    def name(self) -> str:
        return self.lemmas[0].replace("_", " ")

    @property
    def tag_count(self) -> int:
        return sum(self.lemma_counts)

    @property
    def words(self) -> list[str]:
        """The lemmas as people write them ("German shepherd"), WordNet's order."""
        return [lemma.replace("_", " ") for lemma in self.lemmas]

    @property
    def common_name(self) -> str:
        """The lemma used most often in this sense (ties: WordNet's first)."""
        best = max(range(len(self.lemmas)), key=lambda i: (self.lemma_counts[i], -i))
        return self.words[best]


def read_nouns(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR) -> dict[int, Synset]:
    """All noun synsets by offset, with hyponyms and lemma counts filled in."""
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
            synsets[offset] = Synset(offset, lexfile, lemmas, hypernyms, lemma_counts=[0] * len(lemmas))
    for synset in synsets.values():
        for parent in synset.hypernyms:
            synsets[parent].hyponyms.append(synset.offset)
    for (lemma, offset), count in _noun_lemma_counts(wordnet_dir).items():
        synset = synsets.get(offset)
        if synset is None:
            continue
        lowered = [x.lower() for x in synset.lemmas]
        if lemma in lowered:
            synset.lemma_counts[lowered.index(lemma)] += count
    return synsets


def read_senses(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR) -> dict[str, list[int]]:
    """Each noun lemma (lower case, ``_`` for spaces) -> its synset offsets, most frequent sense first."""
    senses: dict[str, list[int]] = {}
    with open(Path(wordnet_dir) / "index.noun", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("  "):
                continue
            fields = line.split()
            synset_count, pointer_count = int(fields[2]), int(fields[3])
            senses[fields[0]] = [int(f) for f in fields[6 + pointer_count : 6 + pointer_count + synset_count]]
    return senses


def synset_by_key(key: str, senses: dict[str, list[int]]) -> int:
    """The offset of ``lemma.n.NN`` (``dog.n.01``; WordNet's sense order), or a wnid ``n02084071``."""
    if key.startswith("n") and key[1:].isdigit():
        return offset_of(key)
    try:
        lemma, pos, number = key.rsplit(".", 2)
        if pos != "n":
            raise ValueError
        return senses[lemma.lower()][int(number) - 1]
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"{key!r} is not a WordNet noun sense such as dog.n.01") from None


def _strip_marker(lemma: str) -> str:
    return lemma.split("(", 1)[0]  # adjective markers such as "(p)" never occur on nouns, but be safe


def _noun_lemma_counts(wordnet_dir: Path) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = defaultdict(int)
    index = wordnet_dir / "index.sense"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found: install Debian's wordnet-sense-index")
    with open(index, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            sense_key, offset, _sense_number, tag_count = line.split()
            lemma, rest = sense_key.split("%", 1)
            if rest.startswith("1:"):  # ss_type 1: noun
                counts[(lemma, int(offset))] += int(tag_count)
    return counts


def ancestors(synsets: dict[int, Synset], offset: int) -> set[int]:
    """Every hypernym above ``offset`` (transitively), not including itself."""
    return _closure(synsets, offset, "hypernyms")


def descendants(synsets: dict[int, Synset], offset: int) -> set[int]:
    """Every hyponym below ``offset`` (transitively), not including itself."""
    return _closure(synsets, offset, "hyponyms")


def _closure(synsets: dict[int, Synset], offset: int, relation: str) -> set[int]:
    seen: set[int] = set()
    stack = list(getattr(synsets[offset], relation))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(getattr(synsets[current], relation))
    return seen


def offset_of(wnid: str) -> int:
    if not (len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit()):
        raise ValueError(f"{wnid!r} is not a WordNet noun id like n02123045")
    return int(wnid[1:])
