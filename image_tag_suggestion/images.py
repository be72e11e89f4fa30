"""Image file -> decoded, upright RGB pixels.

Everything a user may upload goes through :func:`load_image`: a path, a
file-like object or raw bytes, in any format Pillow reads (HEIC/HEIF too, through
``pillow-heif``, loaded the first time Pillow alone cannot tell a file). Whatever goes
wrong (not an image, truncated, empty, unreadable, too many or too few pixels) surfaces
as one exception type, :class:`ImageError`, whose message a user can act on.

Memory is bounded before any pixel is allocated: the size a file declares (after a
JPEG's reduced decode) is checked against ``max_pixels`` first. Pillow's own bomb guard,
a process-wide setting, is lifted while a header is read so that ``max_pixels`` alone
decides, in both directions.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Default ceiling on the pixels decoded (width x height, after a JPEG's reduced decode):
#: 100 MP is 300 MB of RGB, the most a laptop should spend on one picture. Camera JPEGs
#: far larger than that are decoded at a reduced scale and pass; a PNG that declares
#: 177 MP in 22 kB does not.
DEFAULT_MAX_PIXELS = 100_000_000
#: A picture needs this many pixels on its short side to be tagged at all.
MIN_SIDE = 16

#: File name extensions the CLI picks up when it walks a folder.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".ppm", ".pgm"}
)
_PILLOW_GUARD = threading.Lock()
_HEIF: dict[str, bool | None] = {"registered": None}  # None: not tried yet
_HEIF_LOCK = threading.Lock()


class ImageError(ValueError):
    """An input could not be turned into pixels; the message says why and what to do."""


def describe_source(source: ImageSource) -> str:
    """A short name for messages: the path, the upload's name, or "image data"."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or "image data"


def load_image(source: ImageSource, min_size: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int | None = None) -> np.ndarray:
    """Decode ``source`` to an upright ``uint8`` RGB array of shape (H, W, 3).

    Args:
        source: a path, a binary file-like object (an upload), or the file's bytes.
        min_size: if given, JPEGs may be decoded at a reduced scale (1/2, 1/4, 1/8)
            as long as the short side stays at least this many pixels, so a 12-MP
            photo costs a fraction of a full decode when the model needs 256 px.
        max_pixels: refuse images that would decode to more pixels than this, before
            decoding them (``None``: no limit).
        min_side: refuse images whose short side is smaller than this.

    EXIF orientation is applied, transparency is composited on white, palette,
    grayscale, CMYK and 16-bit images become 8-bit RGB, and animations give their
    first frame.
    """
    name = describe_source(source)
    try:
        with _open(source, name) as image:
            if min_side and min(image.size) < min_side:
                raise ImageError(f"{name}: too small to tag ({image.size[0]}x{image.size[1]} pixels); the short side "
                                 f"needs at least {min_side}")
            if min_size and image.format == "JPEG":
                _draft(image, min_size)
            _check_pixels(image, name, max_pixels)
            try:
                image.seek(0)
            except EOFError:
                pass
            big = image.size[0] * image.size[1] > (Image.MAX_IMAGE_PIXELS or float("inf"))
            with _pillow_guard_lifted() if big else nullcontext():  # max_pixels has already decided
                image.load()
                upright = ImageOps.exif_transpose(image)
            return _to_rgb_array(upright)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"{name}: cannot be read: permission denied") from None
    except MemoryError:
        raise ImageError(f"{name}: out of memory while decoding; the picture is too large for this machine") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: the image data is damaged or incomplete ({_reason(exc)}); re-export or re-download the file") from None


def probe_image(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The (width, height) a file declares, read from its header without decoding it; the
    errors are :func:`load_image`'s (not an image, unreadable, too many pixels...)."""
    name = describe_source(source)
    try:
        with _open(source, name) as image:
            _check_pixels(image, name, max_pixels)
            return image.size
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"{name}: cannot be read: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error) as exc:
        raise ImageError(f"{name}: the image data is damaged or incomplete ({_reason(exc)})") from None


@contextmanager
def _pillow_guard_lifted():
    """Pillow's decompression-bomb guard off, under a lock (it is one setting for the whole process)."""
    with _PILLOW_GUARD:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


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
        if not os.access(path, os.R_OK):
            raise ImageError(f"{name}: cannot be read: permission denied")
        stream = os.fspath(path)
    else:
        stream = source
        if hasattr(stream, "seek"):
            stream.seek(0)
        if hasattr(stream, "getbuffer") and len(stream.getbuffer()) == 0:
            raise ImageError(f"{name}: the file is empty")
    try:
        try:
            return _open_unguarded(stream)
        except UnidentifiedImageError:
            if not _register_heif():
                raise
            if hasattr(stream, "seek"):
                stream.seek(0)
            return _open_unguarded(stream)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file Pillow can read (expected JPEG, PNG, WebP, GIF, BMP, TIFF, "
                         "HEIC, AVIF...)") from None


def _open_unguarded(stream) -> Image.Image:
    """Read the header with Pillow's guard lifted: our own check comes next."""
    with _pillow_guard_lifted():
        return Image.open(stream)


def _register_heif() -> bool:
    """Teach Pillow HEIC/HEIF (pillow-heif), once; True when Pillow reads HEIF now, so a file it
    could not identify is worth one more try. Under a lock: a thread that finds the work begun
    waits for it rather than seeing Pillow without the opener (and calling an iPhone photo "not
    an image")."""
    with _HEIF_LOCK:
        if _HEIF["registered"] is None:
            try:
                import pillow_heif
            except ImportError:
                _HEIF["registered"] = False
            else:
                pillow_heif.register_heif_opener()
                _HEIF["registered"] = True
        return _HEIF["registered"]


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
