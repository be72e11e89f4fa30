"""Files inside compiled Qt resource files (``.rcc``): how Debian's GCompris data ships its
photos, which the int8 encoder's representative data and the dev set read."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def read_qt_resources(path: Path) -> dict[str, bytes]:
    """Every file in a compiled Qt resource file (``.rcc``): path inside -> bytes.

    The format: a ``qres`` header with the offsets of a tree of fixed-size nodes, a
    table of UTF-16 names and a data area; a file's data may be zlib-compressed with
    its size in front (Qt's ``qCompress``).
    """
    blob = path.read_bytes()
    if blob[:4] != b"qres":
        raise ValueError(f"{path} is not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 14 if version < 2 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset : names + offset + 2])
        return blob[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        node, prefix = stack.pop()
        start = tree + node * node_size
        name_offset, flags = struct.unpack(">IH", blob[start : start + 6])
        name = name_at(name_offset) if node else ""
        if flags & 2:  # a directory: its children are consecutive nodes
            count, first = struct.unpack(">II", blob[start + 6 : start + 14])
            stack.extend((child, f"{prefix}{name}/") for child in range(first, first + count))
            continue
        (offset,) = struct.unpack(">I", blob[start + 10 : start + 14])
        (size,) = struct.unpack(">I", blob[data + offset : data + offset + 4])
        content = blob[data + offset + 4 : data + offset + 4 + size]
        if flags & 4:  # zstd: not used by the files we read
            continue
        files[prefix + name] = zlib.decompress(content[4:]) if flags & 1 else content
    return files
