"""Image file -> decoded, upright RGB pixels.

Everything a user may upload goes through :func:`load_image`: a path, a
file-like object or raw bytes, in any format Pillow reads. Whatever goes wrong
(not an image, truncated, empty, too many pixels) surfaces as one exception
type, :class:`ImageError`, whose message a user can act on.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Default ceiling on width x height, far above any camera (a 102-MP medium
#: format frame is 0.1 G) and far below a decompression bomb's billions.
DEFAULT_MAX_PIXELS = 180_000_000

#: File name extensions the CLI picks up when it walks a folder.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".avif", ".ppm", ".pgm"}
)


class ImageError(ValueError):
    """An input could not be turned into pixels; the message says why and what to do."""


def describe_source(source: ImageSource) -> str:
    """A short name for messages: the path, the upload's name, or "image data"."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or "image data"


def load_image(source: ImageSource, min_size: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``source`` to an upright ``uint8`` RGB array of shape (H, W, 3).

    Args:
        source: a path, a binary file-like object (an upload), or the file's bytes.
        min_size: if given, JPEGs may be decoded at a reduced scale (1/2, 1/4, 1/8)
            as long as the short side stays at least this many pixels, so a 12-MP
            photo costs a fraction of a full decode when the model needs 256 px.
        max_pixels: refuse images with more pixels than this (``None``: no limit).

    EXIF orientation is applied, transparency is composited on white, palette,
    grayscale, CMYK and 16-bit images become 8-bit RGB, and animations give their
    first frame.
    """
    name = describe_source(source)
    try:
        with _open(source, name) as image:
            _check_pixels(image, name, max_pixels)
            if min_size and image.format == "JPEG":
                _draft(image, min_size)
            try:
                image.seek(0)
            except EOFError:
                pass
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                upright = ImageOps.exif_transpose(image)
            return _to_rgb_array(upright)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: too many pixels to decode safely ({exc})") from None  # pragma: no cover
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(f"{name}: the image data is damaged or incomplete ({_reason(exc)}); re-export or re-download the file") from None


def _open(source: ImageSource, name: str) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{name}: the file is empty")
        stream: BinaryIO | str = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image file")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: the file is empty")
        stream = os.fspath(path)
    else:
        stream = source
        if hasattr(stream, "seek"):
            stream.seek(0)
        if hasattr(stream, "getbuffer") and len(stream.getbuffer()) == 0:
            raise ImageError(f"{name}: the file is empty")
    try:
        return Image.open(stream)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file Pillow can read (expected JPEG, PNG, WebP, GIF, BMP, TIFF...)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: too many pixels to decode safely; Pillow refuses it as a possible decompression bomb ({exc})") from None


def _check_pixels(image: Image.Image, name: str, max_pixels: int | None) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: the image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name}: too many pixels ({width}x{height} = {width * height / 1e6:.0f} megapixels, the limit is "
            f"{max_pixels / 1e6:.0f}); shrink the image or raise max_pixels (--max-pixels on the command line)"
        )


def _draft(image: Image.Image, min_size: int) -> None:
    width, height = image.size
    short = min(width, height)
    if short <= min_size:
        return
    scale = min_size / short
    # Pillow picks the largest reduction that keeps the image at least this big.
    image.draft("RGB", (int(np.ceil(width * scale)), int(np.ceil(height * scale))))


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _wide_grayscale_to_8bit(image)
        mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _wide_grayscale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale: scale to the full 8-bit range, don't clip."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        top = 65535.0
    elif image.mode == "F" and np.nanmax(values, initial=0.0) <= 1.0:
        top = 1.0
    else:
        top = max(float(np.nanmax(values, initial=0.0)), 1.0)
        top = 65535.0 if top > 255 and top <= 65535 else top
    scaled = np.clip(np.nan_to_num(values) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
