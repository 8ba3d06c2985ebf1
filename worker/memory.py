"""How much of the SVD pipeline fits in a device's memory: the worker's memory plan (decode chunk, forward
chunking, model offload) chosen from free memory before a job runs, rather than after it runs out.

Where the numbers come from:
- Weights: exact parameter counts of the published configs (ops/bench/gpu builds them on the meta device;
  tests/test_bench_gpu.py checks them): UNet 1,524,623,082, temporal VAE 97,742,847, ViT-H/14 image encoder
  632,076,800; 2 bytes each in fp16 (4.51 GB in all). The worker passes the bytes of the pipeline it loaded.
- Activations: a trace of live tensor bytes through the published UNet and VAE on the meta device (every op's
  outputs counted from creation until freed; no memory, no compute), with attention as a fused kernel keeps it
  (output and log-sum-exp, never the score matrix), in fp16, classifier-free guidance batch 2. At 25 frames and
  1024x576 the UNet peaks at 8.30 GB (4.76 GB with forward chunking) and the VAE decode at 1.208 GB per frame.
  Both scale linearly in frames x pixels: 14 frames, 512x320 and 512x576 give the same bytes per frame and pixel
  within 0.4 %, as they should with fused attention (its memory is linear in tokens).
- These are estimates awaiting a GPU run: the CUDA caching allocator adds fragmentation (ALLOCATOR_MARGIN), and
  cuDNN/cuBLAS workspaces and the CUDA context are outside the trace (RESERVE_BYTES). The 8.30 GB + 3.05 GB for
  offload's UNet-only residency is consistent with diffusers' note that offload + forward chunking + decode chunk 1
  needs "less than 8 GB"; `ops/bench/gpu` prints the measured peak per row on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

GIB = 1024**3
RESERVE_BYTES = 1 * GIB  # CUDA context extras, cuDNN/cuBLAS workspaces, the conditioning image's fp32 VAE encode
ALLOCATOR_MARGIN = 0.10  # caching-allocator fragmentation on top of the traced live bytes
DEFAULT_BUDGET_BYTES = 24 * GIB  # the default plan fits a 24 GB card, and renders the same bytes on a larger one
CPU_DECODE_CHUNK = 8  # the report's decode_chunk_size; CPU memory is not planned

MemoryMode = Literal["auto", "full", "low", "offload"]
MEMORY_MODES: tuple[str, ...] = ("auto", "full", "low", "offload")


def frames_per_chunk(free_bytes: int, bytes_per_frame: int, reserve_bytes: int = 0, *, cap: int | None = None) -> int:
    """How many frames one chunk may hold so that chunk x bytes_per_frame stays under free - reserve: at least 1
    (a single frame is the floor; below it only a lower-memory mode helps), at most `cap` when given."""
    if bytes_per_frame <= 0:
        raise ValueError("bytes_per_frame must be positive")
    room = max(0, free_bytes - reserve_bytes)
    n = max(1, room // bytes_per_frame)
    return min(n, cap) if cap is not None else n


def balanced_chunk(frames: int, max_chunk: int) -> int:
    """The smallest chunk that needs no more chunks than `max_chunk` does: 25 frames at most 15 a chunk -> 13+12,
    not 15+10 (the same number of decoder calls, a lower peak)."""
    chunks = math.ceil(frames / max(1, min(max_chunk, frames)))
    return math.ceil(frames / chunks)


@dataclass(frozen=True)
class Footprint:
    """A model family's activation memory in elements (multiply by the dtype's bytes), linear in frames x pixels."""

    unet_per_latent_px: float  # UNet peak, CFG batch 2, per frame and latent pixel (1/8 of each side)
    unet_chunked_per_latent_px: float  # the same with forward chunking
    decode_per_px: float  # VAE decode peak per decoded frame and output pixel


# the meta-device trace of the published configs (see the module docstring): 8.296e9 B / (25 x 72 x 128) / 2 B
SVD_FOOTPRINT = Footprint(unet_per_latent_px=18_003, unet_chunked_per_latent_px=10_323, decode_per_px=1_024)
# the same trace of models/tiny.py's config (only a GPU smoke test of the tiny model ever plans with it)
TINY_FOOTPRINT = Footprint(unet_per_latent_px=1_736, unet_chunked_per_latent_px=968, decode_per_px=224)
FOOTPRINTS = {"svd": SVD_FOOTPRINT, "svd-xt": SVD_FOOTPRINT, "svd-xt-1-1": SVD_FOOTPRINT, "tiny": TINY_FOOTPRINT}


def footprint_for(model: str) -> Footprint:
    return FOOTPRINTS.get(model, SVD_FOOTPRINT)  # an unknown model is planned as the big one


@dataclass(frozen=True)
class WeightBytes:
    unet: int
    vae: int
    image_encoder: int

    @property
    def total(self) -> int:
        return self.unet + self.vae + self.image_encoder


SVD_PARAMS = WeightBytes(unet=1_524_623_082, vae=97_742_847, image_encoder=632_076_800)


def svd_weights(dtype_bytes: int = 2) -> WeightBytes:
    return WeightBytes(*(n * dtype_bytes for n in (SVD_PARAMS.unet, SVD_PARAMS.vae, SVD_PARAMS.image_encoder)))


@dataclass(frozen=True)
class DeviceMemory:
    """free_bytes: what the pipeline may use, its own resident weights included (mem_get_info's free plus what
    this process's allocator holds)."""

    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class MemoryPlan:
    mode: Literal["cpu", "full", "low", "offload"]
    decode_chunk_size: int
    forward_chunking: bool
    offload: Literal["none", "model_cpu_offload"]
    fits: bool  # False: even this mode is estimated over the memory; it is tried anyway (an OOM retry follows)
    estimated_peak_bytes: int | None  # traced bytes, without margin or reserve; None on the CPU
    usable_bytes: int | None  # free, capped by the budget, less the reserve
    reasons: tuple[str, ...]

    def as_record(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def plan_memory(*, frames: int, height: int, width: int, dtype_bytes: int, device: DeviceMemory | None,
                weights: WeightBytes, footprint: Footprint = SVD_FOOTPRINT, mode: MemoryMode = "auto",
                decode_chunk_size: int | None = None, budget_bytes: int | None = DEFAULT_BUDGET_BYTES,
                reserve_bytes: int = RESERVE_BYTES) -> MemoryPlan:
    """The plan for one render. `mode` other than auto forces that mode; a job's own `decode_chunk_size` is kept."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory mode {mode!r}: choose one of {', '.join(MEMORY_MODES)}")
    asked = min(decode_chunk_size, frames) if decode_chunk_size else None
    if device is None:
        chunk = asked or min(CPU_DECODE_CHUNK, frames)
        why = "the job's" if asked else f"the default {CPU_DECODE_CHUNK}"
        return MemoryPlan("cpu", chunk, False, "none", True, None, None,
                          (f"cpu: no CUDA device, so memory is not planned; decode chunk {chunk} ({why})",))

    def raw(elements: float) -> float:
        return elements * dtype_bytes

    def padded(elements: float) -> float:
        return raw(elements) * (1 + ALLOCATOR_MARGIN)

    latent_px = (height // 8) * (width // 8)
    unet_act = {False: footprint.unet_per_latent_px * frames * latent_px,
                True: footprint.unet_chunked_per_latent_px * frames * latent_px}
    decode_frame = footprint.decode_per_px * height * width
    frames_out = frames * height * width * 3 * (dtype_bytes + 4)  # decoded frames, then their float32 copy
    cap = device.free_bytes if budget_bytes is None else min(device.free_bytes, budget_bytes)
    usable = cap - reserve_bytes
    reasons = [f"{_gb(device.free_bytes)} free of {_gb(device.total_bytes)}"
               + (f", budget {_gb(budget_bytes)}" if budget_bytes is not None else ", no budget")
               + f", reserve {_gb(reserve_bytes)}: {_gb(usable)} usable"]
    # (chunking, offload, weights on the device while the UNet runs, while the VAE decodes)
    layouts: dict[str, tuple[bool, bool, int, int]] = {
        "full": (False, False, weights.total, weights.total),
        "low": (True, False, weights.total, weights.total),
        "offload": (True, True, weights.unet, weights.vae),
    }

    def unet_need(name: str) -> float:
        chunking, _, resident, _ = layouts[name]
        return resident + padded(unet_act[chunking])

    if mode == "auto":
        fitting = [name for name in ("full", "low", "offload") if unet_need(name) <= usable]
        chosen = fitting[0] if fitting else "offload"
        for name in ("full", "low", "offload"):
            if name == chosen:
                break
            reasons.append(f"{name}: the UNet needs {_gb(unet_need(name))} > {_gb(usable)}")
        if not fitting:
            reasons.append(f"offload, the lowest-memory mode, needs {_gb(unet_need('offload'))} > {_gb(usable)}: "
                           "tried anyway")
    else:
        chosen = mode
        reasons.append(f"{mode} forced by the memory-mode setting")
    chunking, offload, unet_resident, decode_resident = layouts[chosen]
    fits = unet_need(chosen) <= usable

    room = int(usable - decode_resident - frames_out)
    most = frames_per_chunk(room, max(1, int(padded(decode_frame))), cap=frames)
    if asked:
        chunk = asked
        reasons.append(f"decode chunk {chunk}: the job's (memory allows {most})")
    else:
        chunk = balanced_chunk(frames, most)
        reasons.append(f"decode chunk {chunk}: at most {most} of {frames} frames fit at "
                       f"{_gb(padded(decode_frame))} each")
    decode_need = decode_resident + frames_out + padded(decode_frame) * chunk
    if decode_need > usable:
        fits = False
        reasons.append(f"the decode needs {_gb(decode_need)} > {_gb(usable)}")
    peak = max(unet_resident + raw(unet_act[chunking]), decode_resident + frames_out + raw(decode_frame) * chunk)
    reasons.append(f"{chosen}: estimated peak {_gb(peak)}" + ("" if fits else ", over the usable memory"))
    return MemoryPlan(chosen, chunk, chunking, "model_cpu_offload" if offload else "none",  # type: ignore[arg-type]
                      fits, int(peak), int(usable), tuple(reasons))
