"""What measuring a render costs (worker/video_metrics.py, run by the worker on every job's decoded frames):
`python ops/bench/video_metrics.py` prints a Markdown table, milliseconds per clip and per frame, for a 25-frame
1024x576 clip (SVD-XT's output), a 14-frame one (SVD's) and the tiny model's 14 frames at 128x64, each measured
whole and split into its parts (the optical flow is most of it), and what it adds to a job's wall time when it
runs, as the worker runs it, on a thread beside the mp4 encode. `--tiny-render` adds the tiny model's own
render on this machine (its denoising and decoding, 25 steps on the CPU), for a cost to hold the measuring
against on the same hardware; `--quick` uses two small clips (the test does).

The clips are a textured frame moving 3 px a frame: the flow's cost depends on the frame size and the number of
pyramid levels, not on what the frames show, so this stands for any render of that size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.harness.machine import cpu_model
from worker import optical_flow, video_metrics
from worker.encode import encode
from worker.produce import Measuring

SIZES = [("SVD-XT", 25, 1024, 576), ("SVD", 14, 1024, 576), ("tiny", 14, 128, 64)]
QUICK = [("small", 6, 256, 144), ("tiny", 4, 128, 64)]


def clip(frames: int, width: int, height: int, step: int = 3) -> np.ndarray:
    """A window moving `step` px a frame over smooth random colour blobs."""
    rng = np.random.default_rng(0)
    w, h = width + step * frames, height
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize(((w // 8 + 1) * 8, (h // 8 + 1) * 8), Image.Resampling.BICUBIC))
    return np.stack([big[:height, t * step:t * step + width] for t in range(frames)])


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    """The median of `repeats` timings, in ms (this machine is shared: the median drops the odd slow run)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def tiny_render_s(frames: int, steps: int) -> float:
    """Seconds of one tiny-model render (denoising and VAE decoding) at its 128x64, on the CPU."""
    from models.params import resolve_params
    from models.registry import REGISTRY
    from models.tiny import ensure_tiny
    from worker.pipeline import PipelineHolder

    with tempfile.TemporaryDirectory() as tmp:
        holder = PipelineHolder(model="tiny", source=str(ensure_tiny(Path(tmp))), device="cpu")
        holder.locate()
        holder.load()
        params, errors = resolve_params(REGISTRY["tiny"], {"num_frames": frames, "num_inference_steps": steps,
                                                           "seed": 0})
        assert not errors, errors
        image = Image.new("RGB", (128, 64), (120, 90, 200))
        holder.render(image, {**params, "num_inference_steps": 1}, lambda step, total: None)  # first-call costs
        t0 = time.perf_counter()
        holder.render(image, params, lambda step, total: None)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="two small clips, 2 repeats")
    p.add_argument("--tiny-render", action="store_true", help="also time the tiny model's own 25-step render")
    a = p.parse_args(argv)
    sizes, repeats = (QUICK, 2) if a.quick else (SIZES, a.repeats)
    rows = []
    for name, frames, width, height in sizes:
        video = clip(frames, width, height)
        luma = [video_metrics._luma(f) for f in video]
        parts = {
            "whole measure()": lambda v=video: video_metrics.measure(v, v[0]),
            "luma": lambda v=video: [video_metrics._luma(f) for f in v],
            "motion (optical flow)": lambda y=luma: optical_flow.mean_motion(y),
            "frame_difference": lambda v=video: video_metrics.frame_difference(v),
            "flicker": lambda y=luma: video_metrics.flicker(y),
            "first_frame_similarity (SSIM)": lambda y=luma: video_metrics.ssim(y[0], y[0]),
        }
        for part, fn in parts.items():
            ms = best_ms(fn, repeats)
            rows.append((f"{name} {frames}x{width}x{height}", part, ms, ms / frames))
    print(f"svdq video metrics, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
          f"({cpu_model()}), NumPy {np.__version__}; median of {repeats}; flow at most "
          f"{optical_flow.FLOW_SIDE} px on its long side\n")
    print("| clip | part | ms per clip | ms per frame |\n|---|---|---|---|")
    for clip_name, part, ms, per_frame in rows:
        print(f"| {clip_name} | {part} | {ms:.2f} | {per_frame:.3f} |")
    # the worker measures on a thread beside the post-processing, encoding and upload (worker/produce.py):
    # what that adds to a job's wall time is the measuring that outlasts the encode
    name, frames, width, height = sizes[0]
    video = clip(frames, width, height)
    source = video[0].copy()
    image = Image.fromarray(source)
    encode_ms = best_ms(lambda: encode(video, fps=7, fmt="mp4"), repeats)

    def beside() -> None:
        measuring = Measuring("bench", video, image)
        encode(video, fps=7, fmt="mp4")
        measuring.result()

    both_ms = best_ms(beside, repeats)
    alone_ms = next(ms for c, part, ms, _ in rows if c.startswith(name) and part == "whole measure()")
    print(f"\n{name} {frames}x{width}x{height}: mp4 encode alone {encode_ms:.0f} ms; measure() alone {alone_ms:.0f} "
          f"ms; both, measuring on its thread as the worker does: {both_ms:.0f} ms, so measuring adds "
          f"{both_ms - encode_ms:.0f} ms to the job (one after the other: {encode_ms + alone_ms:.0f} ms)")
    if a.tiny_render:
        frames = 4 if a.quick else 14
        secs = tiny_render_s(frames, 25)
        measured = next(ms for c, part, ms, _ in rows if c.startswith("tiny") and part == "whole measure()")
        print(f"\ntiny model's own render of {frames} frames at 128x64, 25 steps on this CPU: {secs:.2f} s; "
              f"measuring it: {measured:.1f} ms ({100 * measured / 1000 / secs:.1f}% of the render)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
