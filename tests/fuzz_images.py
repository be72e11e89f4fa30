"""Mutated image files through the decoder (run by tests/test_fuzz.py in its own process,
so that its peak memory is its own): prints a JSON summary."""

from __future__ import annotations

import io
import json
import random
import resource
import sys
import time
import warnings

import numpy as np
from PIL import Image

from image_tag_suggestion.images import ImageError, load_image

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "AVIF", "HEIF")


def seeds() -> dict[str, bytes]:
    import pillow_heif

    pillow_heif.register_heif_opener()
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = {}
    for fmt in FORMATS:
        buffer = io.BytesIO()
        picture.save(buffer, fmt)
        out[fmt] = buffer.getvalue()
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flipped bytes, a cut, a changed header field or inserted bytes."""
    mutant = bytearray(data)
    kind = rng.random()
    if kind < 0.4:
        for _ in range(rng.randint(1, 8)):
            mutant[rng.randrange(len(mutant))] = rng.randrange(256)
    elif kind < 0.6:
        mutant = mutant[: rng.randrange(1, len(mutant))]
    elif kind < 0.8:
        at = rng.randrange(min(len(mutant), 64))  # the header: sizes, counts, offsets
        mutant[at : at + 4] = rng.randbytes(4)
    else:
        at = rng.randrange(len(mutant))
        mutant[at:at] = rng.randbytes(rng.randint(1, 32))
    return bytes(mutant)


def peak_rss_mb() -> float:
    """This program's own peak (VmHWM: ru_maxrss would count the memory of the process that
    started it, kept across exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(seconds: float, max_cases: int, max_pixels: int) -> None:
    warnings.simplefilter("ignore")  # Pillow's metadata warnings on broken TIFF tags
    rng = random.Random(0)
    originals = seeds()
    counts = {"cases": 0, "decoded": 0, "image_errors": 0}
    other: list[str] = []
    start = time.monotonic()
    while time.monotonic() - start < seconds and counts["cases"] < max_cases:
        fmt = FORMATS[counts["cases"] % len(FORMATS)]
        data = mutate(originals[fmt], rng)
        counts["cases"] += 1
        try:
            pixels = load_image(data, min_size=256, max_pixels=max_pixels)
            assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
            counts["decoded"] += 1
        except ImageError:
            counts["image_errors"] += 1
        except Exception as exc:  # what the test says must never happen
            other.append(f"{fmt}: {type(exc).__name__}: {exc}"[:200])
    counts["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps({**counts, "other": other[:20], "n_other": len(other)}))


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
