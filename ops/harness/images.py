"""The sample image every test, the chaos run and the benchmarks upload: a solid color with blue stripes."""

from __future__ import annotations

import io

from PIL import Image


def sample_png(width: int = 160, height: int = 96, color: tuple[int, int, int] = (200, 60, 30)) -> bytes:
    img = Image.new("RGB", (width, height), color)
    for x in range(0, width, 16):
        img.paste((20, 20, 200), (x, 0, x + 8, height))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
