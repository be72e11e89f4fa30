"""Ranked tags -> sidecar files beside the photos, never touching the photos.

XMP sidecars carry the tags as ``dc:subject`` keywords and the broader chain as
``lr:hierarchicalSubject`` paths ("animal|mammal|cat"). Two names are in use:
``photo.jpg.xmp`` (darktable, digiKam) and ``photo.xmp`` (Lightroom and Capture One,
Lightroom only beside raw files); ``naming`` chooses. An existing sidecar is merged,
and everything in it stays as it was: every ``rdf:Description`` (exiftool writes one per
namespace), their other fields, the ``<?xpacket?>`` wrapper, comments, the prefixes its
namespaces use, its file mode, and the user's own keywords; only the keywords we wrote
last time (remembered under our own namespace) are replaced.
JSON sidecars (``photo.jpg.tags.json``) hold the same tags with their scores.
"""

from __future__ import annotations

import io
import json
import os
import re
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
XMP_NAMINGS = ("PHOTO.ext.xmp", "PHOTO.xmp")  # darktable and digiKam; Lightroom and Capture One
_PACKET = ("<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>\n", "\n<?xpacket end='w'?>\n")
_BAGS = (("dc", "subject"), ("lr", "hierarchicalSubject"), ("its", "keywords"), ("its", "hierarchicalSubjects"))


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def xmp_path(image: str | os.PathLike, naming: str = XMP_NAMINGS[0]) -> Path:
    """``photo.jpg.xmp`` (``PHOTO.ext.xmp``) or ``photo.xmp`` (``PHOTO.xmp``)."""
    if naming not in XMP_NAMINGS:
        raise ValueError(f"naming must be one of {XMP_NAMINGS}, not {naming!r}")
    image = Path(image)
    return image.with_suffix(XMP_SUFFIX) if naming == "PHOTO.xmp" else Path(f"{os.fspath(image)}{XMP_SUFFIX}")


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


def write_xmp(image: str | os.PathLike, keywords: Sequence[str], paths: Sequence[str] = (),
              naming: str = XMP_NAMINGS[0]) -> Path:
    """Write or merge ``image``'s XMP sidecar (see the module); returns its path."""
    path = xmp_path(image, naming)
    raw = path.read_bytes() if path.exists() else None
    tree = _parse(raw, path) if raw is not None else _new_tree()
    descriptions = _descriptions(tree)
    found = {bag: _take_bag(descriptions, *bag) for bag in _BAGS}  # removed from wherever they were
    keywords, paths = list(keywords), list(paths)
    ours_before = set(found[("its", "keywords")][1]), set(found[("its", "hierarchicalSubjects")][1])
    values = {
        ("dc", "subject"): _unique([k for k in found[("dc", "subject")][1] if k not in ours_before[0]] + keywords),
        ("lr", "hierarchicalSubject"): _unique([p for p in found[("lr", "hierarchicalSubject")][1]
                                                if p not in ours_before[1]] + paths),
        ("its", "keywords"): keywords,
        ("its", "hierarchicalSubjects"): paths,
    }
    for bag, items in values.items():
        _set_bag(found[bag][0] if found[bag][0] is not None else descriptions[0], *bag, items)
    body = ET.tostring(tree.getroot(), encoding="unicode").encode("utf-8")
    head, tail = _wrapper(raw) if raw is not None else (_PACKET[0].encode("utf-8"), _PACKET[1].encode("utf-8"))
    _atomic_write(path, head + body + tail, mode=path.stat().st_mode & 0o7777 if raw is not None else None)
    return path


def _parse(raw: bytes, path: Path) -> ET.ElementTree:
    """The sidecar, with its comments and processing instructions, its prefixes known to ElementTree."""
    try:
        for _, (prefix, uri) in ET.iterparse(io.BytesIO(raw), events=("start-ns",)):
            if prefix and uri not in NS.values() and not re.fullmatch(r"ns\d+|xml", prefix):
                ET.register_namespace(prefix, uri)
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
        return ET.ElementTree(ET.fromstring(raw, parser=parser))
    except ET.ParseError as exc:
        raise ValueError(f"{path}: existing sidecar is not valid XML ({exc}); left untouched") from None


def _new_tree() -> ET.ElementTree:
    root = ET.Element(_q("x", "xmpmeta"))
    rdf = ET.SubElement(root, _q("rdf", "RDF"))
    ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    return ET.ElementTree(root)


def _wrapper(raw: bytes) -> tuple[bytes, bytes]:
    """What stands before and after the root element: the XML declaration, ``<?xpacket?>``..."""
    start = re.search(rb"<(?![?!])", raw)  # the root's start tag: not a <?...?> or <!...>
    closing = raw.rfind(b"</")  # the root's end tag is the last one
    return raw[: start.start()] if start else b"", raw[raw.find(b">", closing) + 1 :] if closing >= 0 else b""


def _descriptions(tree: ET.ElementTree) -> list[ET.Element]:
    root = tree.getroot()
    rdf = root if root.tag == _q("rdf", "RDF") else root.find(_q("rdf", "RDF"))
    if rdf is None:
        raise ValueError("existing sidecar has no rdf:RDF element; left untouched")
    descriptions = rdf.findall(_q("rdf", "Description"))
    if not descriptions:
        descriptions = [ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})]
    return descriptions


def _take_bag(descriptions: list[ET.Element], prefix: str, name: str) -> tuple[ET.Element | None, list[str]]:
    """The items of a bag property in any Description, removed; and the Description it was first in."""
    home, items = None, []
    for description in descriptions:
        for element in description.findall(_q(prefix, name)):
            home = home if home is not None else description
            items += [li.text or "" for li in element.iter(_q("rdf", "li"))]
            description.remove(element)
    return home, items


def write_json(image: str | os.PathLike, tags: Sequence[Tag], model: str) -> Path:
    path = json_path(image)
    document = {"file": Path(image).name, "model": model,
                "tags": [{"label": t.label, "score": round(t.score, 4), "id": t.id, "broader": t.broader} for t in tags]}
    _atomic_write(path, (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return path


def _set_bag(description: ET.Element, prefix: str, name: str, values: list[str]) -> None:
    if not values:
        return
    bag = ET.SubElement(ET.SubElement(description, _q(prefix, name)), _q("rdf", "Bag"))
    for value in values:
        ET.SubElement(bag, _q("rdf", "li")).text = value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write whole or not at all; the file gets ``mode``, or a new file's usual mode (umask applied)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
