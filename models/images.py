"""Untrusted image bytes in, a clean RGB PNG out. The worker only ever reads the re-encoded copy."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps

MAGIC = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
}


class ImageRejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class CleanImage:
    png: bytes
    width: int
    height: int
    source_sha256: str


def sniff_format(data: bytes) -> str | None:
    if data.startswith(MAGIC["PNG"][0]):
        return "PNG"
    if data.startswith(MAGIC["JPEG"][0]):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def clean_image(data: bytes, *, max_pixels: int) -> CleanImage:
    if not data:
        raise ImageRejected(422, "invalid_image", "The image is empty; attach a PNG, JPEG or WebP file.")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(415, "unsupported_media_type",
                            "The file is not a PNG, JPEG or WebP image (judged by its content, not its name).")
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=[fmt])
        w, h = img.size
        if w * h > max_pixels:
            raise ImageRejected(422, "invalid_image",
                                f"The image is {w}x{h}, over the limit of {max_pixels} pixels; scale it down.")
        if getattr(img, "is_animated", False) or getattr(img, "n_frames", 1) > 1:
            raise ImageRejected(422, "invalid_image", "Animated images are not accepted; send a single frame.")
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            img = flat
        else:
            img = img.convert("RGB")
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageRejected(422, "invalid_image",
                            f"The {fmt} file could not be decoded ({exc.__class__.__name__}): "
                            "it may be truncated or corrupt; export it again.") from exc
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return CleanImage(png=buf.getvalue(), width=img.width, height=img.height,
                      source_sha256=hashlib.sha256(data).hexdigest())


def fit_image(img: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """Fit to width x height: crop (fill, cut the overflow), pad (fit, black bars) or stretch."""
    if mode == "stretch":
        return img.resize((width, height), Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(img, (width, height), Image.Resampling.LANCZOS, color=(0, 0, 0))
    return ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)
