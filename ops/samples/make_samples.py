"""Draws the sample images the repo ships (nothing is downloaded). Run: python ops/samples/make_samples.py"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

W, H = 1024, 576
HERE = Path(__file__).parent


def sky(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    for y in range(H):
        t = y / (H - 1)
        d.line([(0, y), (W, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return img


def rocket() -> Image.Image:
    img = sky((20, 30, 80), (240, 150, 90))
    d = ImageDraw.Draw(img)
    d.polygon([(0, H), (0, 470), (300, 430), (620, 480), (W, 440), (W, H)], fill=(40, 45, 50))
    cx = 520
    d.polygon([(cx - 40, 380), (cx + 40, 380), (cx + 40, 170), (cx, 90), (cx - 40, 170)], fill=(235, 235, 240))
    d.polygon([(cx - 40, 380), (cx - 80, 420), (cx - 40, 300)], fill=(200, 40, 40))
    d.polygon([(cx + 40, 380), (cx + 80, 420), (cx + 40, 300)], fill=(200, 40, 40))
    d.ellipse([cx - 18, 190, cx + 18, 226], fill=(60, 140, 220))
    flame = Image.new("L", (W, H), 0)
    ImageDraw.Draw(flame).polygon([(cx - 35, 380), (cx + 35, 380), (cx, 500)], fill=255)
    flame = flame.filter(ImageFilter.GaussianBlur(12))
    img.paste(Image.new("RGB", (W, H), (255, 190, 60)), mask=flame)
    return img


def waves() -> Image.Image:
    img = sky((120, 190, 240), (230, 240, 250))
    d = ImageDraw.Draw(img)
    d.ellipse([780, 60, 900, 180], fill=(255, 230, 120))
    for k in range(8):
        y0 = 300 + k * 36
        pts = [(x, y0 + 14 * math.sin(x / 60 + k)) for x in range(0, W + 8, 8)]
        d.polygon([*pts, (W, H), (0, H)], fill=(20 + 10 * k, 80 + 12 * k, 140 + 10 * k))
    d.polygon([(300, 330), (420, 330), (400, 360), (320, 360)], fill=(120, 70, 40))
    d.polygon([(355, 330), (355, 230), (410, 320)], fill=(250, 250, 250))
    return img


if __name__ == "__main__":
    rocket().save(HERE / "rocket.jpg", quality=88)
    waves().save(HERE / "waves.jpg", quality=88)
    print("wrote", HERE / "rocket.jpg", HERE / "waves.jpg")
