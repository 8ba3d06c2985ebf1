"""Timing one render: Bench (a pipeline and what a row needs to set it up from scratch), StepClock (a timestamp
after each denoising step), Timing, and render, one real `pipe(...)` call timed end to end and split at the step
callbacks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .configs import ModelConfig


@dataclass
class Bench:
    """A pipeline and what a row needs to set it up from scratch."""

    config: ModelConfig
    pipe: Any
    device: torch.device
    dtype: torch.dtype
    image: Image.Image
    frames: int
    height: int
    width: int
    steps: int
    tflop: float  # per video
    floor_s: float
    compile_mode: str = "default"
    seed: int = 0
    repeats: int = 1
    unet: Any = None  # the eager UNet; rows may swap pipe.unet for a compiled wrapper
    processors: dict[str, dict[str, Any]] = field(default_factory=dict)
    offloaded: bool = False

    def __post_init__(self) -> None:
        self.unet = self.pipe.unet
        self.processors = {"unet": dict(self.pipe.unet.attn_processors), "vae": dict(self.pipe.vae.attn_processors)}

    @property
    def cuda(self) -> bool:
        return bool(self.device.type == "cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


class StepClock:
    """callback_on_step_end: a timestamp after each denoising step (synchronized, so it is when the GPU is done)."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.stamps: list[float] = []

    def __call__(self, pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.sync()
        self.stamps.append(time.perf_counter())
        return {}


@dataclass
class Timing:
    seconds: float
    steps_per_s: float
    decode_s: float
    first_step_s: float


def render(bench: Bench, decode_chunk: int, steps: int | None = None) -> Timing:
    """One real `pipe(...)` call, timed end to end and split at the step callbacks."""
    steps = steps or bench.steps
    clock = StepClock(bench.sync)
    generator = torch.Generator(device="cpu").manual_seed(bench.seed)
    bench.sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        bench.pipe(bench.image, height=bench.height, width=bench.width, num_frames=bench.frames,
                   num_inference_steps=steps, decode_chunk_size=decode_chunk, generator=generator,
                   output_type="np", callback_on_step_end=clock)
    bench.sync()
    t1 = time.perf_counter()
    stamps = clock.stamps
    if len(stamps) >= 2:  # steady state: step 0 also pays for the image encodes (and offload's uploads)
        steps_per_s = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    else:
        steps_per_s = len(stamps) / (stamps[-1] - t0)
    return Timing(t1 - t0, steps_per_s, t1 - stamps[-1], stamps[0] - t0)
