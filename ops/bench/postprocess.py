"""Seconds per post-processing stage for one video: `python ops/bench/postprocess.py` (25 frames, 1024x576,
7 fps, like an SVD-XT render) prints a Markdown table; `--quick` uses a small clip (the test does).

The learned rows run random-weight models built from the real architectures, saved to a file and loaded
through the worker's loaders (worker/learned.py); time does not depend on the weights' values, only on the
model's size. `--learned-size small` (the default on a CPU, where the published sizes take many minutes) uses
narrow models and labels the rows so; `--learned-size published` uses the published layouts (RIFE v4.6,
Real-ESRGAN Compact and x4plus), the numbers to compare with real weights: run it on a GPU with `--device cuda`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.harness.machine import cpu_model
from worker.encode import encode
from worker.postprocess import interpolate_blend, interpolate_motion, upscale_lanczos

# (RIFE widths, RIFE residual depth, Compact features, Compact convs); published: RIFE v4.6, realesr-animevideov3
SIZES = {"small": ((48, 32, 24, 16), 2, 16, 4), "published": ((192, 128, 96, 64), 8, 64, 16)}


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


def learned_models(size: str, device: str, scale: int, folder: Path) -> Any:
    """Random-weight models of the given size, saved and loaded back through the worker's loaders."""
    import torch

    from worker.learned import LearnedModels, import_spandrel
    from worker.rife import IFNet

    import_spandrel()
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    widths, depth, feat, convs = SIZES[size]
    torch.manual_seed(0)
    torch.save(IFNet(widths, depth).state_dict(), folder / "flownet.pkl")
    if scale == 4:  # Real-ESRGAN x4plus (RRDBNet, 64 filters, 23 blocks)
        torch.save(ESRGAN(num_filters=64 if size == "published" else 16, num_blocks=23 if size == "published" else 2,
                          scale=4).state_dict(), folder / "upscale.pth")
    else:
        torch.save(Compact(num_feat=feat, num_conv=convs, upscale=scale).state_dict(), folder / "upscale.pth")
    return LearnedModels.load(interpolate_weights=folder / "flownet.pkl", upscale_weights=folder / "upscale.pth",
                              device=device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=576)
    p.add_argument("--fps", type=int, default=7)
    p.add_argument("--to-fps", type=int, default=24)
    p.add_argument("--quick", action="store_true", help="a 6-frame 128x64 clip")
    p.add_argument("--device", default="cpu", help="where the learned models run (cpu, cuda, cuda:N)")
    p.add_argument("--learned-size", choices=sorted(SIZES), help="default: small on a CPU, published on a GPU")
    p.add_argument("--upscale-4x", action="store_true", help="also time a learned 4x upscale (RRDBNet x4plus)")
    p.add_argument("--skip-learned", action="store_true")
    a = p.parse_args(argv)
    size = a.learned_size or ("small" if a.device == "cpu" else "published")
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
    if not a.skip_learned:
        label = "random weights, " + ("SMALL model, not the published size" if size == "small" else "published size")
        with tempfile.TemporaryDirectory() as tmp:
            for scale in (2, 4) if a.upscale_4x else (2,):
                models = learned_models(size, a.device, scale, Path(tmp))
                if scale == 2:
                    timed(f"learned interpolate RIFE v4.6 {a.fps}->{a.to_fps} fps ({label}, {a.device})",
                          models.interpolator, frames, a.fps, a.to_fps)
                arch = "Real-ESRGAN Compact" if scale == 2 else "Real-ESRGAN x4plus"
                timed(f"learned upscale {scale}x {arch} ({label}, {a.device})", models.upscaler, frames, scale)
    timed("encode mp4 (for scale)", lambda f: np.zeros((len(encode(f, fps=a.fps, fmt="mp4").data),)), frames)
    print(f"svdq post-processing, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
          f"({cpu_model()}), learned stages on {a.device}; "
          f"input {a.frames} frames {a.width}x{a.height} @ {a.fps} fps\n")
    print("| stage | seconds | output shape |\n|---|---|---|")
    for name, secs, shape in rows:
        print(f"| {name} | {secs:.2f} | {'x'.join(map(str, shape))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
