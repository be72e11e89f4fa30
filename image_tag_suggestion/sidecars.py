"""Ranked tags -> sidecar files beside the photos, never touching the photos.

XMP sidecars carry the tags as ``dc:subject`` keywords and the broader chain as
``lr:hierarchicalSubject`` paths ("animal|mammal|cat"). Two names are in use:
``photo.jpg.xmp`` (darktable, digiKam) and ``photo.xmp`` (Lightroom and Capture One,
Lightroom only beside raw files); ``naming`` chooses. An existing sidecar is merged,
and everything in it stays as it was: what stands before and after the root element
(the XML declaration, the ``<?xpacket?>`` wrapper, comments, processing instructions)
byte for byte; every ``rdf:Description`` (exiftool writes one per namespace) and their
other fields; the prefixes the sidecar gives its namespaces (each sidecar's own: nothing
is remembered between sidecars); its file mode, and its symlink; and the user's own
keywords. Only the keywords we wrote last time (remembered under our own namespace) are
replaced. A sidecar declaring a DOCTYPE or entities is refused, whatever the installed
expat would do with them. JSON sidecars (``photo.jpg.tags.json``) hold the same tags
with their scores.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Sequence
from xml.dom import Node, minidom
from xml.parsers import expat

import defusedxml.minidom
from defusedxml import DefusedXmlException

from .files import atomic_write
from .labels import LabelTable
from .scoring import Tag

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "its": "https://github.com/image-tag-suggestion/ns/1.0/",
}
XMLNS = "http://www.w3.org/2000/xmlns/"

XMP_SUFFIX = ".xmp"
JSON_SUFFIX = ".tags.json"
XMP_NAMINGS = ("PHOTO.ext.xmp", "PHOTO.xmp")  # darktable and digiKam; Lightroom and Capture One
# A new sidecar is this one, merged into like any other.
_NEW_SIDECAR = (
    "<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>\n"
    f'<x:xmpmeta xmlns:x="{NS["x"]}">\n'
    f' <rdf:RDF xmlns:rdf="{NS["rdf"]}">\n'
    '  <rdf:Description rdf:about=""/>\n'
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
    "<?xpacket end='w'?>\n"
).encode("utf-8")
_BAGS = (("dc", "subject"), ("lr", "hierarchicalSubject"), ("its", "keywords"), ("its", "hierarchicalSubjects"))


def xmp_path(image: str | os.PathLike, naming: str = XMP_NAMINGS[0]) -> Path:
    """``photo.jpg.xmp`` (``PHOTO.ext.xmp``) or ``photo.xmp`` (``PHOTO.xmp``)."""
    if naming not in XMP_NAMINGS:
        raise ValueError(f"naming must be one of {XMP_NAMINGS}, not {naming!r}")
    image = Path(image)
    return image.with_suffix(XMP_SUFFIX) if naming == "PHOTO.xmp" else Path(f"{os.fspath(image)}{XMP_SUFFIX}")


def json_path(image: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(image)}{JSON_SUFFIX}")


def hierarchy(labels: LabelTable, tag: Tag) -> list[str]:
    """The chain of broader tags above ``tag`` (widest first), ending with the tag itself."""
    return labels.broader_chain(tag.id) + [tag.label]


def keywords_and_paths(groups: Sequence[tuple[Sequence[Tag], LabelTable]]) -> tuple[list[str], list[str]]:
    """Keywords and hierarchical paths for tags of one or more models (each with its own labels)."""
    keywords, paths = [], []
    for tags, labels in groups:
        keywords += [t.label for t in tags]
        paths += ["|".join(hierarchy(labels, t)) for t in tags]
    return _unique(keywords), _unique(paths)


def write_xmp(image: str | os.PathLike, keywords: Sequence[str], paths: Sequence[str] = (),
              naming: str = XMP_NAMINGS[0]) -> Path:
    """Write or merge ``image``'s XMP sidecar (see the module); returns its path. A sidecar that
    cannot be merged safely raises ValueError and is left as it was."""
    path = xmp_path(image, naming)
    raw = path.read_bytes() if path.exists() else _NEW_SIDECAR
    document, encoding = _parse(raw, path)
    descriptions = _descriptions(document, path)
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
    start, end = _root_span(raw)
    root = _xml(document.documentElement).encode(encoding, "xmlcharrefreplace")
    atomic_write(path, raw[:start] + root + raw[end:])  # keeps the mode, follows a symlink, fsyncs
    return path


def write_json(image: str | os.PathLike, tags: Sequence[Tag], model: str) -> Path:
    path = json_path(image)
    document = {"file": Path(image).name, "model": model,
                "tags": [{"label": t.label, "score": round(t.score, 4), "id": t.id, "broader": t.broader} for t in tags]}
    atomic_write(path, (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return path


def _parse(raw: bytes, path: Path) -> tuple[minidom.Document, str]:
    """The sidecar as a DOM (comments, processing instructions and namespace declarations
    included, so every prefix is this document's own), and the encoding to write it back in.
    defusedxml refuses a DOCTYPE itself rather than trusting the installed expat's limits."""
    try:
        document = defusedxml.minidom.parseString(raw, forbid_dtd=True)
    except DefusedXmlException:
        raise ValueError(f"{path}: existing sidecar declares a DOCTYPE or entities, which are not read; "
                         "left untouched") from None
    except expat.ExpatError as exc:
        raise ValueError(f"{path}: existing sidecar is not valid XML ({exc}); left untouched") from None
    encoding = codecs.lookup(document.encoding or "utf-8").name
    if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or encoding.startswith("utf-16"):
        # The bytes around the root are copied as they are, so the root must be written in a
        # byte-oriented encoding too.
        raise ValueError(f"{path}: existing sidecar is in UTF-16, which is not merged; left untouched")
    return document, encoding


def _root_span(raw: bytes) -> tuple[int, int]:
    """Where the root element starts and ends in ``raw``, a document ``_parse`` accepted (so it
    declares no entities). After the root there is only whitespace, comments and processing
    instructions, so the root ends at the last ``>`` before the first of those."""
    parser = expat.ParserCreate()
    marks: list[int] = []  # the root's start, then the start of the first node after it
    depth = 0

    def start(name, attributes):
        nonlocal depth
        if depth == 0 and not marks:
            marks.append(parser.CurrentByteIndex)
        depth += 1

    def end(name):
        nonlocal depth
        depth -= 1

    def outside(*_):
        if depth == 0 and len(marks) == 1:
            marks.append(parser.CurrentByteIndex)

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CommentHandler = parser.ProcessingInstructionHandler = outside
    parser.Parse(raw, True)
    return marks[0], raw.rindex(b">", 0, marks[1] if len(marks) > 1 else len(raw)) + 1


def _descriptions(document: minidom.Document, path: Path) -> list[minidom.Element]:
    root = document.documentElement
    rdf = root if _is(root, "rdf", "RDF") else next((e for e in _children(root) if _is(e, "rdf", "RDF")), None)
    if rdf is None:
        raise ValueError(f"{path}: existing sidecar has no rdf:RDF element; left untouched")
    descriptions = [e for e in _children(rdf) if _is(e, "rdf", "Description")]
    if not descriptions:
        description = _element(rdf, "rdf", "Description")
        description.setAttributeNS(NS["rdf"], f"{description.prefix}:about", "")
        descriptions = [_append(rdf, description)]
    return descriptions


def _take_bag(descriptions: list[minidom.Element], prefix: str, name: str) -> tuple[minidom.Element | None, list[str]]:
    """The items of a bag property in any Description, removed; and the Description it was first in."""
    home, items = None, []
    for description in descriptions:
        for element in [e for e in _children(description) if _is(e, prefix, name)]:
            home = home if home is not None else description
            items += [_text(li) for li in element.getElementsByTagNameNS(NS["rdf"], "li")]
            _remove(element)
    return home, items


def _set_bag(description: minidom.Element, prefix: str, name: str, values: list[str]) -> None:
    if not values:
        return
    prop = _append(description, _element(description, prefix, name))
    bag = _append(prop, _element(prop, "rdf", "Bag"))
    for value in values:
        _append(bag, _element(bag, "rdf", "li")).appendChild(bag.ownerDocument.createTextNode(value))


def _element(parent: minidom.Element, prefix: str, name: str) -> minidom.Element:
    """A new element for ``parent`` in namespace ``NS[prefix]``, named with the prefix this
    sidecar binds to that namespace there; one it does not bind is declared on ``parent``
    (as ``prefix``, or ``prefix2``... where the sidecar uses ``prefix`` for something else)."""
    uri, bound = NS[prefix], {}
    node = parent
    while node.nodeType == Node.ELEMENT_NODE:
        for attribute, value in node.attributes.items():
            if attribute.startswith("xmlns:"):
                bound.setdefault(attribute[len("xmlns:"):], value)  # the nearest declaration wins
        node = node.parentNode
    chosen = next((p for p, u in bound.items() if u == uri), None)
    if chosen is None:
        chosen = next(p for p in [prefix] + [f"{prefix}{n}" for n in range(2, len(bound) + 3)] if p not in bound)
        parent.setAttributeNS(XMLNS, f"xmlns:{chosen}", uri)
    return parent.ownerDocument.createElementNS(uri, f"{chosen}:{name}")


def _append(parent: minidom.Element, child: minidom.Element) -> minidom.Element:
    """Add ``child`` last in ``parent``, on a line of its own one space deeper than ``parent``;
    returns it."""
    document = parent.ownerDocument
    before = parent.previousSibling
    indent = before.data.rsplit("\n", 1)[-1] if _blank(before) and "\n" in before.data else ""
    closing = parent.lastChild if _blank(parent.lastChild) else parent.appendChild(document.createTextNode("\n" + indent))
    parent.insertBefore(document.createTextNode("\n" + indent + " "), closing)
    return parent.insertBefore(child, closing)


def _remove(element: minidom.Element) -> None:
    """Take ``element`` out with the indentation before it, so merging again adds no blank lines."""
    if _blank(element.previousSibling):
        element.parentNode.removeChild(element.previousSibling)
    element.parentNode.removeChild(element)


def _xml(node: minidom.Node) -> str:
    """``node`` as XML. Attribute values escape tabs and line breaks, so they read back unchanged
    (minidom's own writer leaves them raw, and a parser turns them into spaces). Namespace
    declarations come first, as minidom reads them, so merging again changes nothing."""
    if node.nodeType == Node.ELEMENT_NODE:
        items = sorted(node.attributes.items(), key=lambda item: not item[0].startswith("xmlns"))
        attributes = "".join(f' {name}="{value.translate(_ATTRIBUTE)}"' for name, value in items)
        inside = "".join(_xml(child) for child in node.childNodes)
        return f"<{node.tagName}{attributes}>{inside}</{node.tagName}>" if inside else f"<{node.tagName}{attributes}/>"
    if node.nodeType == Node.TEXT_NODE:
        return node.data.translate(_TEXT)
    return node.toxml()  # a comment, processing instruction or CDATA section, as it was


_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;", '"': "&quot;", "\t": "&#9;",
                            "\n": "&#10;"})


def _children(element: minidom.Element) -> list[minidom.Element]:
    return [node for node in element.childNodes if node.nodeType == Node.ELEMENT_NODE]


def _is(element: minidom.Element, prefix: str, name: str) -> bool:
    return element.namespaceURI == NS[prefix] and element.localName == name


def _blank(node: minidom.Node | None) -> bool:
    return node is not None and node.nodeType == Node.TEXT_NODE and not node.data.strip()


def _text(element: minidom.Element) -> str:
    return "".join(n.data for n in element.childNodes if n.nodeType in (Node.TEXT_NODE, Node.CDATA_SECTION_NODE))


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))
