"""Frames (T, H, W, 3 uint8) to bytes: H.264 mp4, VP9 webm, gif, a zip of PNGs, and a poster JPEG."""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif", "frames": "application/zip"}
EXTENSIONS = {"mp4": "mp4", "webm": "webm", "gif": "gif", "frames": "zip"}
# bit-exact flags so a rerun on the same machine writes the same bytes
_BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-threads", "1"]


class EncodeError(Exception):
    pass


@dataclass(frozen=True)
class Encoded:
    data: bytes
    content_type: str
    extension: str


def _ffmpeg(frames: np.ndarray, fps: int, suffix: str, codec: str, extra: list[str]) -> bytes:
    _t, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory(prefix="svdq-enc-") as tmp:
        path = Path(tmp) / f"out.{suffix}"
        writer = imageio_ffmpeg.write_frames(
            str(path), (w, h), fps=fps, codec=codec, pix_fmt_out="yuv420p", quality=None,
            macro_block_size=1, output_params=[*extra, *_BITEXACT],
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return path.read_bytes()


def encode(frames: np.ndarray, *, fps: int, fmt: str) -> Encoded:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise EncodeError(f"expected (T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    try:
        if fmt == "mp4":
            data = _ffmpeg(frames, fps, "mp4", "libx264",
                           ["-crf", "18", "-preset", "medium", "-movflags", "+faststart"])
        elif fmt == "webm":
            data = _ffmpeg(frames, fps, "webm", "libvpx-vp9", ["-crf", "30", "-b:v", "0"])
        elif fmt == "gif":
            imgs = [Image.fromarray(f) for f in frames]
            buf = io.BytesIO()
            imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:],
                         duration=round(1000 / fps), loop=0)
            data = buf.getvalue()
        elif fmt == "frames":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                for i, f in enumerate(frames):
                    png = io.BytesIO()
                    Image.fromarray(f).save(png, format="PNG")
                    info = zipfile.ZipInfo(f"frame_{i:04d}.png", date_time=(2020, 1, 1, 0, 0, 0))
                    zf.writestr(info, png.getvalue())
            data = buf.getvalue()
        else:
            raise EncodeError(f"unknown output format {fmt!r}")
    except (OSError, RuntimeError) as exc:
        raise EncodeError(f"encoding {fmt} failed: {exc}") from exc
    return Encoded(data=data, content_type=CONTENT_TYPES[fmt], extension=EXTENSIONS[fmt])


def poster(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frames[len(frames) // 2]).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
