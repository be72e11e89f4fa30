"""Small labelled datasets with learnable content, made on disk by the tests.

Each image has a background colour (red, green or blue) and a shape (circle or
square) drawn in white; the labels are those two words, so every image has two
positives and a learnable answer. Open Images form: MIDs, a descriptions CSV, label
CSVs with Confidence 1 (present) and 0 (verified absent) rows, ``<ImageID>.jpg``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (200, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 200)}
SHAPES = ("circle", "square")
MIDS = {"red": "/m/0red", "green": "/m/0green", "blue": "/m/0blue", "circle": "/m/0circle", "square": "/m/0square"}


def draw(colour: str, shape: str, rng: random.Random, size: int = 96) -> Image.Image:
    base = COLOURS[colour]
    jitter = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in base)
    image = Image.new("RGB", (size + rng.randint(0, 40), size + rng.randint(0, 20)), jitter)
    pen = ImageDraw.Draw(image)
    w, h = image.size
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    (pen.ellipse if shape == "circle" else pen.rectangle)(box, fill=(245, 245, 245))
    return image


def make_openimages(folder: Path, n_images: int = 240, seed: int = 0) -> Path:
    """Write an Open Images-format dataset; returns the folder."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "oidv6-class-descriptions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["LabelName", "DisplayName"])
        for name, mid in MIDS.items():
            writer.writerow([mid, name])
    rows = []
    for i in range(n_images):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        image_id = f"{i:016x}"
        draw(colour, shape, rng).save(folder / "images" / f"{image_id}.jpg", quality=90)
        rows += [(image_id, "verification", MIDS[colour], 1), (image_id, "verification", MIDS[shape], 1)]
        other_colour = rng.choice([c for c in COLOURS if c != colour])
        other_shape = [s for s in SHAPES if s != shape][0]
        rows += [(image_id, "verification", MIDS[other_colour], 0), (image_id, "verification", MIDS[other_shape], 0)]
    with open(folder / "oidv6-train-annotations-human-imagelabels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageID", "Source", "LabelName", "Confidence"])
        writer.writerows(rows)
    return folder


def make_folders(folder: Path, per_tag: int = 30, seed: int = 1) -> Path:
    """``folder/<colour>/*.jpg``: one tag per image."""
    rng = random.Random(seed)
    for colour in COLOURS:
        (folder / colour).mkdir(parents=True, exist_ok=True)
        for i in range(per_tag):
            draw(colour, rng.choice(SHAPES), rng).save(folder / colour / f"{i:03d}.jpg")
    return folder


def make_csv(folder: Path, n_images: int = 90, seed: int = 2) -> Path:
    """``labels.csv`` with columns path,tags (tags joined by ';'); returns the CSV path."""
    rng = random.Random(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "tags"])
        for i in range(n_images):
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            draw(colour, shape, rng).save(folder / "img" / f"{i:03d}.png")
            writer.writerow([f"img/{i:03d}.png", f"{colour};{shape}"])
    return folder / "labels.csv"


def draw_stripes(direction: str, rng: random.Random, size: int = 128) -> Image.Image:
    """Stripes across the picture, ``horizontal`` or ``vertical``: a label that turning the
    picture on its side changes."""
    background = tuple(rng.randint(0, 120) for _ in range(3))
    ink = tuple(rng.randint(150, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    width, gap = rng.randint(6, 12), rng.randint(10, 18)
    for start in range(rng.randint(0, gap), size, width + gap):
        box = (0, start, size, start + width) if direction == "horizontal" else (start, 0, start + width, size)
        pen.rectangle(box, fill=ink)
    return image


def make_stripes(folder: Path, per_tag: int, seed: int, sideways: bool = False) -> Path:
    """Folder-per-tag stripes; ``sideways``: each file stores its picture turned a quarter
    (counter-clockwise) with EXIF Orientation 6 saying so, as a phone held sideways does, so
    a viewer that applies EXIF shows it upright."""
    rng = random.Random(seed)
    for direction in ("horizontal", "vertical"):
        (folder / direction).mkdir(parents=True, exist_ok=True)
        for i in range(per_tag):
            image = draw_stripes(direction, rng)
            path = folder / direction / f"{i:03d}.jpg"
            if sideways:
                exif = Image.Exif()
                exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
                image.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif.tobytes())
            else:
                image.save(path, quality=92)
    return folder
