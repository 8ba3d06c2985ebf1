"""Seconds per post-processing stage for one video: `python ops/bench/postprocess.py` (25 frames, 1024x576,
7 fps, like an SVD-XT render) prints a Markdown table; `--quick` uses a small clip (the test does)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from client.procs import cpu_model
from worker.encode import encode
from worker.postprocess import interpolate_blend, interpolate_motion, upscale_lanczos


def clip(frames: int, width: int, height: int) -> np.ndarray:
    """A moving gradient with a moving square: motion for the interpolators to follow."""
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        out[t, ..., 0] = (x + 8 * t) % 256
        out[t, ..., 1] = (y + 4 * t) % 256
        out[t, ..., 2] = 128
        s = height // 4
        x0 = (t * width // (2 * frames)) % (width - s)
        out[t, s:2 * s, x0:x0 + s] = 255
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=576)
    p.add_argument("--fps", type=int, default=7)
    p.add_argument("--to-fps", type=int, default=24)
    p.add_argument("--quick", action="store_true", help="a 6-frame 128x64 clip")
    a = p.parse_args(argv)
    if a.quick:
        a.frames, a.width, a.height = 6, 128, 64
    frames = clip(a.frames, a.width, a.height)
    rows = []

    def timed(name: str, fn, *args: object) -> np.ndarray:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out: np.ndarray = fn(*args)
        rows.append((name, time.perf_counter() - t0, out.shape))
        return out

    timed(f"interpolate blend {a.fps}->{a.to_fps} fps", interpolate_blend, frames, a.fps, a.to_fps)
    timed(f"interpolate motion {a.fps}->{a.to_fps} fps", interpolate_motion, frames, a.fps, a.to_fps)
    timed("upscale lanczos 2x", upscale_lanczos, frames, 2)
    timed("encode mp4 (for scale)", lambda f: np.zeros((len(encode(f, fps=a.fps, fmt="mp4").data),)), frames)
    print(f"svdq post-processing, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
          f"({cpu_model()}), CPU only; input {a.frames} frames {a.width}x{a.height} @ {a.fps} fps\n")
    print("| stage | seconds | output shape |\n|---|---|---|")
    for name, secs, shape in rows:
        print(f"| {name} | {secs:.2f} | {'x'.join(map(str, shape))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
