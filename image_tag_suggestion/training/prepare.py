"""Pre-resize a training set once, so training reads small files (on a GPU, decoding
full-size photos is the bottleneck: 16 cores decode about 1,400 1024x768 JPEGs a second,
while a GPU trains MobileNetV2 on 6,000-7,000; the seed resized to 224 before
training too).

    image-tags prepare oidv6/images --out oidv6-256/images --size 256

Every image under SRC is decoded upright (EXIF applied), its short side scaled to
``size`` (never enlarged) and saved as JPEG under the same relative path (extension
``.jpg``), written whole or not at all. Files already prepared and newer than their source
are skipped, so an interrupted run can simply be started again. Unreadable files, and a
file that would be written where another source's goes (``a.png`` and ``a.jpeg``), are
counted as failed with the reason, not fatal.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from ..files import atomic_output
from ..images import ImageError, load_image
from ..tagging import find_images


@dataclass
class PrepareReport:
    written: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


def prepare_images(source: str | os.PathLike, out: str | os.PathLike, size: int = 256, quality: int = 90,
                   workers: int | None = None, on_start: Callable[[int], None] | None = None,
                   on_done: Callable[[int], None] | None = None) -> PrepareReport:
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise ValueError(f"{source}: not a folder")
    files = find_images([source])
    targets, clashes = _targets(files, source, out)
    if on_start:
        on_start(len(files))
    report = PrepareReport()

    def one(path: str):
        target = targets[path]
        if path in clashes:
            return "failed", (f"{path}: would be prepared as {target}, like {clashes[path]}; "
                              "rename one of them (nothing was written for it)")
        if target.exists() and target.stat().st_mtime >= os.stat(path).st_mtime:
            return "skipped", None
        try:
            pixels = load_image(path, min_size=size)
        except ImageError as exc:
            return "failed", str(exc)
        image = Image.fromarray(pixels)
        scale = size / min(image.size)
        if scale < 1:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC, reducing_gap=3.0)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as stream:
            image.save(stream, "JPEG", quality=quality)
        return "written", None

    with ThreadPoolExecutor(max_workers=workers or (os.cpu_count() or 1)) as pool:
        for outcome, error in pool.map(one, files):
            if outcome == "written":
                report.written += 1
            elif outcome == "skipped":
                report.skipped += 1
            else:
                report.failed.append(error)
            if on_done:
                on_done(1)
    return report


def _targets(files: list[str], source: Path, out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Each source's prepared file; and the sources that would land on a file another source
    already takes ("a.png" and "a.jpeg" both make "a.jpg"), with the one that keeps it."""
    targets, owners, clashes = {}, {}, {}
    for path in files:
        target = (out / Path(path).relative_to(source)).with_suffix(".jpg")
        targets[path] = target
        if target in owners:
            clashes[path] = owners[target]
        else:
            owners[target] = path
    return targets, clashes
