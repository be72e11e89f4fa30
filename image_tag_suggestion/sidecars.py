"""Ranked tags -> sidecar files beside the photos, never touching the photos.

XMP sidecars (``photo.jpg.xmp``, the name darktable and digiKam look for) carry the
tags as ``dc:subject`` keywords and the broader chain as ``lr:hierarchicalSubject``
paths ("animal|mammal|cat"), which digiKam, darktable and Lightroom read. An
existing sidecar is merged: every other field and the user's own keywords stay;
the keywords we wrote last time (remembered under our own namespace) are replaced.
JSON sidecars (``photo.jpg.tags.json``) hold the same tags with their scores.
"""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from .labels import LabelTable
from .scoring import Tag

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "its": "https://github.com/image-tag-suggestion/ns/1.0/",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

XMP_SUFFIX = ".xmp"
JSON_SUFFIX = ".tags.json"


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def xmp_path(image: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(image)}{XMP_SUFFIX}")


def json_path(image: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(image)}{JSON_SUFFIX}")


def hierarchy(labels: LabelTable, tag: Tag) -> list[str]:
    """The chain of broader tags above ``tag`` (widest first), ending with the tag itself.
    A portrait or a group of people sits under "person"."""
    index = labels.ids.index(tag.id)
    people = index - labels.n_classes - len(labels.broader_ids)
    if people >= 0:
        above = [t.name for t in labels.people if t.signal == "person" and t.id != tag.id]
        return above + [tag.label]
    if index < labels.n_classes:
        members = {index}
    else:
        members = set(labels.broader_members[index - labels.n_classes])
    chain = [
        (len(m), name) for name, m, tag_id in zip(labels.broader_names, labels.broader_members, labels.broader_ids)
        if tag_id != tag.id and members <= set(m)
    ]
    return [name for _, name in sorted(chain, key=lambda item: -item[0])] + [tag.label]


def keywords_and_paths(groups: Sequence[tuple[Sequence[Tag], LabelTable]]) -> tuple[list[str], list[str]]:
    """Keywords and hierarchical paths for tags of one or more models (each with its own labels)."""
    keywords, paths = [], []
    for tags, labels in groups:
        keywords += [t.label for t in tags]
        paths += ["|".join(hierarchy(labels, t)) for t in tags]
    return _unique(keywords), _unique(paths)


def write_xmp(image: str | os.PathLike, keywords: Sequence[str], paths: Sequence[str] = ()) -> Path:
    """Write or merge ``image``'s XMP sidecar; returns its path."""
    path = xmp_path(image)
    tree = _read_or_new(path)
    description = _description(tree)
    keywords, paths = list(keywords), list(paths)
    previous_keywords = set(_bag_items(description, "its", "keywords"))
    previous_paths = set(_bag_items(description, "its", "hierarchicalSubjects"))
    user_keywords = [k for k in _bag_items(description, "dc", "subject") if k not in previous_keywords]
    user_paths = [p for p in _bag_items(description, "lr", "hierarchicalSubject") if p not in previous_paths]
    _set_bag(description, "dc", "subject", _unique(user_keywords + keywords))
    _set_bag(description, "lr", "hierarchicalSubject", _unique(user_paths + paths))
    _set_bag(description, "its", "keywords", keywords)
    _set_bag(description, "its", "hierarchicalSubjects", paths)
    _atomic_write(path, ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True))
    return path


def write_json(image: str | os.PathLike, tags: Sequence[Tag], model: str) -> Path:
    path = json_path(image)
    document = {"file": Path(image).name, "model": model,
                "tags": [{"label": t.label, "score": round(t.score, 4), "id": t.id, "broader": t.broader} for t in tags]}
    _atomic_write(path, (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return path


def _read_or_new(path: Path) -> ET.ElementTree:
    if path.exists():
        try:
            return ET.parse(path)
        except ET.ParseError as exc:
            raise ValueError(f"{path}: existing sidecar is not valid XML ({exc}); left untouched") from None
    root = ET.Element(_q("x", "xmpmeta"))
    rdf = ET.SubElement(root, _q("rdf", "RDF"))
    ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    return ET.ElementTree(root)


def _description(tree: ET.ElementTree) -> ET.Element:
    root = tree.getroot()
    rdf = root if root.tag == _q("rdf", "RDF") else root.find(_q("rdf", "RDF"))
    if rdf is None:
        raise ValueError("existing sidecar has no rdf:RDF element; left untouched")
    description = rdf.find(_q("rdf", "Description"))
    if description is None:
        description = ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    return description


def _bag_items(description: ET.Element, prefix: str, name: str) -> list[str]:
    element = description.find(_q(prefix, name))
    if element is None:
        return []
    return [li.text or "" for li in element.iter(_q("rdf", "li"))]


def _set_bag(description: ET.Element, prefix: str, name: str, values: list[str]) -> None:
    element = description.find(_q(prefix, name))
    if element is not None:
        description.remove(element)
    if not values:
        return
    bag = ET.SubElement(ET.SubElement(description, _q(prefix, name)), _q("rdf", "Bag"))
    for value in values:
        ET.SubElement(bag, _q("rdf", "li")).text = value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
