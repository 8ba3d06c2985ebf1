"""The table's rows: RowSpec (which path and which options a row sets up), ROWS and ROW_NAMES (the rows a run
can time, in table order), and Row (one row's measurements and note)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SMALL_DECODE_CHUNK = 8  # the report's decode_chunk_size (and the worker's current default)


@dataclass(frozen=True)
class RowSpec:
    name: str
    path: str  # "report" or "worker"
    offload: bool = False
    sdpa: bool = True  # diffusers' default AttnProcessor2_0; False: the classic AttnProcessor
    channels_last: bool = False
    compile: bool = False
    decode_chunk: int | None = SMALL_DECODE_CHUNK  # None: all frames at once
    forward_chunking: bool = False
    planned: bool = False  # decode chunk, forward chunking and offload from the worker's memory plan

    def options(self, dtype: torch.dtype, frames: int) -> str:
        parts = [str(dtype).removeprefix("torch."), "cpu offload" if self.offload else "all on device",
                 "SDPA" if self.sdpa else "classic attn"]
        parts += ["channels_last"] * self.channels_last + ["compile"] * self.compile
        parts += ["fwd chunking"] * self.forward_chunking
        parts.append(f"decode {self.chunk(frames)}")
        return ", ".join(parts)

    def chunk(self, frames: int) -> int:
        return frames if self.decode_chunk is None else min(self.decode_chunk, frames)


ROWS: tuple[RowSpec, ...] = (
    RowSpec("report", "report", offload=True),
    RowSpec("baseline", "worker"),
    RowSpec("sdpa-off", "worker", sdpa=False),
    RowSpec("channels-last", "worker", channels_last=True),
    RowSpec("compile", "worker", compile=True),
    RowSpec("decode-all", "worker", decode_chunk=None),
    RowSpec("fwd-chunking", "worker", forward_chunking=True),
    RowSpec("all-eager", "worker", channels_last=True, decode_chunk=None),
    RowSpec("all", "worker", channels_last=True, compile=True, decode_chunk=None),
    RowSpec("worker-default", "worker", channels_last=True, planned=True),  # the 24 GB target's row
)
ROW_NAMES = tuple(spec.name for spec in ROWS)


@dataclass
class Row:
    model: str
    row: str
    path: str
    options: str
    seconds: float = math.nan  # per video: the whole pipe(...) call
    steps_per_s: float = math.nan  # denoising steps (each one batch-2 UNet pass) per second
    decode_s: float = math.nan  # after the last step callback until the call returns: VAE decode + postprocess
    first_step_s: float = math.nan  # call start to the first step callback: image encodes + step 0 (+ uploads)
    peak_gib: float = math.nan  # torch.cuda.max_memory_allocated during the timed call
    tflops: float = math.nan  # achieved: the video's FLOP model / seconds
    x_floor: float = math.nan  # seconds / floor
    warmup_s: float = math.nan  # the untimed warm-up render (compile rows)
    note: str = ""
