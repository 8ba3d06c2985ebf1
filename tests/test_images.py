from __future__ import annotations

import io

import pytest
from PIL import Image

from models.images import ImageRejected, clean_image, fit_image
from ops.harness.images import sample_png


def encode(img: Image.Image, fmt: str, **kw) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_are_cleaned_to_rgb_png(fmt: str) -> None:
    clean = clean_image(encode(Image.new("RGB", (40, 30), (10, 200, 30)), fmt), max_pixels=10_000)
    out = Image.open(io.BytesIO(clean.png))
    assert out.format == "PNG" and out.mode == "RGB" and out.size == (40, 30)
    assert (clean.width, clean.height) == (40, 30)


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    clean = clean_image(encode(img, "JPEG", exif=exif), max_pixels=10_000)
    assert (clean.width, clean.height) == (20, 40)


def test_transparency_is_flattened_on_white() -> None:
    clean = clean_image(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"), max_pixels=100)
    assert Image.open(io.BytesIO(clean.png)).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"", 422, "invalid_image"),
    (b"GIF89a" + b"\x00" * 100, 415, "unsupported_media_type"),
    (b"%PDF-1.4 not an image", 415, "unsupported_media_type"),
    (sample_png()[:200], 422, "invalid_image"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, 422, "invalid_image"),
])
def test_bad_bytes_are_refused_with_a_code(data: bytes, status: int, code: str) -> None:
    with pytest.raises(ImageRejected) as exc:
        clean_image(data, max_pixels=1_000_000)
    assert (exc.value.status, exc.value.code) == (status, code)


def test_too_many_pixels_and_animation_are_refused() -> None:
    with pytest.raises(ImageRejected, match="over the limit"):
        clean_image(encode(Image.new("RGB", (200, 200)), "PNG"), max_pixels=100 * 100)
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    anim = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageRejected, match="Animated"):
        clean_image(anim, max_pixels=10_000)


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_fit_gives_exactly_the_requested_size(mode: str) -> None:
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    out = fit_image(img, 128, 64, mode)
    assert out.size == (128, 64)
    corner = out.getpixel((64, 0))
    # pad keeps the whole (wide) image with bars above and below; crop and stretch fill the frame
    assert corner == ((0, 0, 0) if mode == "pad" else (255, 0, 0))
