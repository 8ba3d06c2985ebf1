"""A sweep's comparison video for one image: its cells tiled in axis order, each labelled with its values,
frames aligned; a failed or canceled cell is a labelled placeholder. The poster is the grid's middle frame."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_W, MAX_H = 1920, 1080
BAND = 22  # label band above each tile, in pixels
GAP = 2
BAND_BG = (0, 0, 0)
TEXT = (255, 255, 255)
PLACEHOLDER_BG = (48, 48, 48)


@dataclass(frozen=True)
class Tile:
    label: str
    frames: np.ndarray | None  # (T, H, W, 3) uint8, or None for a placeholder
    note: str = ""  # placeholder text, e.g. "failed: out_of_memory"
    fps: int = 7


def decode_video(data: bytes, suffix: str = "mp4") -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="svdq-grid-") as tmp:
        path = Path(tmp) / f"cell.{suffix}"
        path.write_bytes(data)
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        w, h = meta["size"]
        frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in gen]
    return np.stack(frames)


SHORT = {"motion_bucket_id": "motion", "noise_aug_strength": "noise", "num_inference_steps": "steps",
         "num_frames": "frames", "min_guidance_scale": "min_cfg", "max_guidance_scale": "max_cfg",
         "decode_chunk_size": "chunk"}


def label_for(cell: dict[str, object]) -> str:
    return "  ".join(f"{SHORT.get(k, k)}={v}" for k, v in cell.items()) or "base"


def fitted(draw: ImageDraw.ImageDraw, text: str, width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The largest font (14 px down to 7) that fits the text in the width."""
    for size in range(14, 6, -1):
        font = _font(size)
        if draw.textlength(text, font=font) <= width:
            return font
    return _font(7)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an old Pillow or one without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def tile_size(tiles: list[Tile], rows: int, cols: int) -> tuple[int, int]:
    """Every tile gets the first real cell's aspect, scaled so the whole grid fits MAX_W x MAX_H."""
    first = next((t.frames for t in tiles if t.frames is not None), None)
    h, w = (first.shape[1], first.shape[2]) if first is not None else (256, 256)
    scale = min(1.0, (MAX_W - GAP * (cols - 1)) / (cols * w), (MAX_H - (BAND + GAP) * rows) / (rows * h))
    return max(32, int(w * scale) // 2 * 2), max(32, int(h * scale) // 2 * 2)


def compose(tiles: list[Tile], rows: int, cols: int) -> tuple[np.ndarray, int]:
    """(frames, fps) of the grid. The longest cell sets the length; shorter ones hold their last frame."""
    if len(tiles) != rows * cols:
        raise ValueError(f"{len(tiles)} tiles do not fill {rows}x{cols}")
    tw, th = tile_size(tiles, rows, cols)
    width = cols * tw + GAP * (cols - 1)
    height = rows * (th + BAND) + GAP * (rows - 1)
    width, height = width + width % 2, height + height % 2
    length = max((len(t.frames) for t in tiles if t.frames is not None), default=1)
    fps = next((t.fps for t in tiles if t.frames is not None), 7)

    # everything that does not move (bands, labels, placeholders) is drawn once
    base = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(base)
    origins = []
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        x, y = c * (tw + GAP), r * (th + BAND + GAP)
        origins.append((x, y + BAND))
        draw.rectangle([x, y, x + tw - 1, y + BAND - 1], fill=BAND_BG)
        draw.text((x + 4, y + 3), tile.label, fill=TEXT, font=fitted(draw, tile.label, tw - 8))
        if tile.frames is None:
            draw.rectangle([x, y + BAND, x + tw - 1, y + BAND + th - 1], fill=PLACEHOLDER_BG)
            draw.text((x + 6, y + BAND + th // 2 - 8), tile.note, fill=TEXT, font=fitted(draw, tile.note, tw - 12))
    canvas = np.asarray(base).copy()

    resized = [None if t.frames is None else
               np.stack([np.asarray(Image.fromarray(f).resize((tw, th), Image.Resampling.BILINEAR))
                         for f in t.frames]) for t in tiles]
    out = np.empty((length, height, width, 3), dtype=np.uint8)
    for k in range(length):
        out[k] = canvas
        for (x, y), frames in zip(origins, resized, strict=True):
            if frames is not None:
                out[k, y:y + th, x:x + tw] = frames[min(k, len(frames) - 1)]
    return out, fps


def poster_jpeg(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frames[len(frames) // 2]).save(buf, format="JPEG", quality=88)
    return buf.getvalue()
