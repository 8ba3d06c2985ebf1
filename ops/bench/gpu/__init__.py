"""Benchmark the real `StableVideoDiffusionPipeline.__call__` for SVD (14 frames) and SVD-XT (25 frames).

The models are built from the published configs (written out below) with random weights, so nothing is
downloaded. Speed does not depend on the weights' values, only on the architecture, the dtype and the options.

One run times, on one device, the original report's path (fp16, `enable_model_cpu_offload()`,
`decode_chunk_size=8`) and the svdq worker's path (the pipeline fully on the GPU) with its options toggled one at
a time and together, and prints a Markdown table for ops/bench/RESULTS.md. See ops/bench/README.md.

    python ops/bench/gpu.py --model both                  # on a GPU: full size, fp16, 1024x576, 25 steps
    python ops/bench/gpu.py --device cpu --size tiny      # anywhere: tiny configs, fp32, 128x64, 2 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# The arithmetic: one batch-1 UNet pass over 25 frames at 1024x576 is ~80 TFLOP, the temporal VAE decode
# of 25 frames at 1024x576 is ~174 TFLOP; both scale linearly with frames and with pixels. Classifier-free
# guidance doubles the UNet's batch. A meta-device FLOP count of the published configs gives 79.9 and 173.6.
UNET_TFLOP_PER_PASS = 80.0
VAE_DECODE_TFLOP = 174.0
REF_FRAMES = 25
REF_PIXELS = 1024 * 576
PEAK_TFLOPS = 990.0  # H100 SXM, dense fp16 tensor cores
SMALL_DECODE_CHUNK = 8  # the report's decode_chunk_size (and the worker's current default)
GIB = 1024**3

# --- published configs ---------------------------------------------------------------------------------------

SVD_UNET: dict[str, Any] = {  # stabilityai/stable-video-diffusion-img2vid{,-xt} unet/config.json
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    "up_block_types": ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1,
    "num_attention_heads": (5, 10, 20, 20),
    "num_frames": 14,
}
SVD_VAE: dict[str, Any] = {  # vae/config.json
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
SVD_IMAGE_ENCODER: dict[str, Any] = {  # image_encoder/config.json: OpenCLIP ViT-H/14 vision tower
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "num_channels": 3,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}
SVD_SCHEDULER: dict[str, Any] = {  # scheduler/scheduler_config.json
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "use_karras_sigmas": True,
}
SVD_FEATURE_EXTRACTOR: dict[str, Any] = {  # feature_extractor/preprocessor_config.json
    "crop_size": {"height": 224, "width": 224},
    "size": {"shortest_edge": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 1 / 255,
}

# --- tiny configs for CPU runs: the same classes and block types, a few thousand times smaller ------------------

TINY_UNET: dict[str, Any] = {
    **SVD_UNET,
    "sample_size": 8,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "block_out_channels": (32, 64),  # the UNet's GroupNorms use 32 groups: channels must be multiples of 32
    "addition_time_embed_dim": 32,
    "projection_class_embeddings_input_dim": 96,  # 3 added time ids x addition_time_embed_dim
    "cross_attention_dim": 32,
    "num_attention_heads": (2, 4),
}
TINY_VAE: dict[str, Any] = {**SVD_VAE, "block_out_channels": (32, 32, 32, 32), "layers_per_block": 1,
                            "sample_size": 64}  # four blocks keep SVD's 8x latent scale
TINY_IMAGE_ENCODER: dict[str, Any] = {**SVD_IMAGE_ENCODER, "hidden_size": 32, "intermediate_size": 64,
                                      "num_hidden_layers": 2, "num_attention_heads": 4, "patch_size": 32,
                                      "projection_dim": 32}  # projection_dim == the UNet's cross_attention_dim


@dataclass(frozen=True)
class ModelConfig:
    name: str
    size: str  # "full" or "tiny"
    frames: int
    unet: dict[str, Any]
    vae: dict[str, Any]
    image_encoder: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SVD_SCHEDULER))
    feature_extractor: dict[str, Any] = field(default_factory=lambda: dict(SVD_FEATURE_EXTRACTOR))
    # FLOP model in the units (per 25 frames at 1024x576); None: count them on the meta device
    unet_tflop_per_pass: float | None = UNET_TFLOP_PER_PASS
    vae_decode_tflop: float | None = VAE_DECODE_TFLOP


MODELS = {"svd": 14, "svd-xt": 25}


def model_config(name: str, size: str = "full") -> ModelConfig:
    """The published config of `svd` or `svd-xt`, or (size="tiny") a tiny one with the same structure."""
    frames = MODELS[name]
    if size == "full":
        return ModelConfig(name, size, frames, {**SVD_UNET, "num_frames": frames}, dict(SVD_VAE),
                           dict(SVD_IMAGE_ENCODER))
    if size == "tiny":
        return ModelConfig(name, size, frames, {**TINY_UNET, "num_frames": frames}, dict(TINY_VAE),
                           dict(TINY_IMAGE_ENCODER), unet_tflop_per_pass=None, vae_decode_tflop=None)
    raise ValueError(f"unknown size {size!r}")


# --- FLOP arithmetic ------------------------------------------------------------------------------------------


def video_tflop(frames: int, height: int, width: int, steps: int, *, cfg: bool = True,
                unet_tflop_per_pass: float = UNET_TFLOP_PER_PASS, vae_decode_tflop: float = VAE_DECODE_TFLOP) -> float:
    """TFLOP of one video: UNet passes (x2 batch for classifier-free guidance) x steps, plus the VAE decode."""
    scale = (frames / REF_FRAMES) * (height * width / REF_PIXELS)
    return scale * (unet_tflop_per_pass * steps * (2 if cfg else 1) + vae_decode_tflop)


def floor_seconds(tflop: float, peak_tflops: float = PEAK_TFLOPS) -> float:
    """The compute floor: seconds at the device's peak rate."""
    return tflop / peak_tflops


def count_tflop(config: ModelConfig, frames: int, height: int, width: int) -> tuple[float, float]:
    """(one batch-1 UNet pass, one VAE decode of all frames) in TFLOP, counted on the meta device: no memory,
    no compute, any size. Counts matmuls, convolutions and attention (torch.utils.flop_counter)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel(**config.unet)
        vae = AutoencoderKLTemporalDecoder(**config.vae)
    # AlphaBlender's mix_factor is made with torch.Tensor([..]), on the CPU whatever the default device
    unet, vae = unet.to("meta"), vae.to("meta")
    scale = 2 ** (len(config.vae["block_out_channels"]) - 1)
    lh, lw = height // scale, width // scale
    with torch.inference_mode(), torch.device("meta"):
        sample = torch.empty(1, frames, config.unet["in_channels"], lh, lw)
        context = torch.empty(1, 1, config.unet["cross_attention_dim"])
        with FlopCounterMode(display=False) as unet_counter:
            unet(sample, torch.tensor(1.0), encoder_hidden_states=context, added_time_ids=torch.empty(1, 3))
        latents = torch.empty(frames, config.vae["latent_channels"], lh, lw)
        with FlopCounterMode(display=False) as vae_counter:
            vae.decode(latents, num_frames=frames)
    return unet_counter.get_total_flops() / 1e12, vae_counter.get_total_flops() / 1e12


def flop_model(config: ModelConfig, frames: int, height: int, width: int) -> tuple[float, float]:
    """The config's FLOP model in the issue's units (TFLOP per 25 frames at 1024x576): the issue's constants for
    the published configs, a meta-device count for the tiny ones."""
    if config.unet_tflop_per_pass is not None and config.vae_decode_tflop is not None:
        return config.unet_tflop_per_pass, config.vae_decode_tflop
    unet, vae = count_tflop(config, frames, height, width)
    scale = (frames / REF_FRAMES) * (height * width / REF_PIXELS)
    return unet / scale, vae / scale


# --- activation memory, traced on the meta device ----------------------------------------------------------------


class LiveBytes(TorchDispatchMode):  # type: ignore[misc]  # untyped in torch
    """Counts the bytes of every tensor an op makes, from creation until it is freed, and keeps the peak: the
    activation memory of a forward pass with no memory and no compute (on the meta device). Weights that exist
    before the pass are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.storages: dict[int, list[int]] = {}  # storage -> [bytes, tensors alive on it]

    def _drop(self, key: int) -> None:
        entry = self.storages[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.storages[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key in self.storages:
                    self.storages[key][1] += 1
                else:
                    self.storages[key] = [storage.nbytes(), 1]
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._drop, key)
        return out


def _fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    # what flash / memory-efficient SDPA keep: the output (and a per-row log-sum-exp), never the score matrix
    torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    return torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)


def trace_activation_bytes(config: ModelConfig, part: str, frames: int, height: int, width: int, *,
                           dtype: torch.dtype = torch.float16, forward_chunking: bool = False) -> int:
    """Peak activation bytes of the UNet (one CFG batch-2 pass over `frames`) or of the VAE decode of `frames`
    frames, with fused attention: the numbers behind worker/memory.py's footprint."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    lh, lw = height // 8, width // 8
    with torch.device("meta"):
        model: Any = (UNetSpatioTemporalConditionModel(**config.unet) if part == "unet"
                      else AutoencoderKLTemporalDecoder(**config.vae))
    model = model.to("meta", dtype)
    if forward_chunking:
        model.enable_forward_chunking()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _fused_attention
    try:
        with torch.inference_mode(), torch.device("meta"):
            if part == "unet":
                sample = torch.empty(2, frames, config.unet["in_channels"], lh, lw, dtype=dtype)
                context = torch.empty(2, 1, config.unet["cross_attention_dim"], dtype=dtype)
                ids = torch.empty(2, 3, dtype=dtype)
                with LiveBytes() as trace:
                    model(sample, torch.tensor(1.0), encoder_hidden_states=context, added_time_ids=ids)
            else:
                latents = torch.empty(frames, config.vae["latent_channels"], lh, lw, dtype=dtype)
                with LiveBytes() as trace:
                    model.decode(latents, num_frames=frames)
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    return int(trace.peak)


# --- building ---------------------------------------------------------------------------------------------------


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_components(config: ModelConfig, dtype: torch.dtype, device: str | torch.device) -> dict[str, Any]:
    """The pipeline's five components with random weights, initialized on `device` (fast on a GPU)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(**config.unet)
        vae = AutoencoderKLTemporalDecoder(**config.vae)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder))
    # .to(device) as well: a few parameters are made with torch.Tensor([..]), which ignores the default device
    models = {"unet": unet, "vae": vae, "image_encoder": image_encoder}
    for model in models.values():
        model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return {**models, "scheduler": EulerDiscreteScheduler(**config.scheduler),
            "feature_extractor": CLIPImageProcessor(**config.feature_extractor)}


def build_pipeline(config: ModelConfig, dtype: torch.dtype, device: str | torch.device) -> Any:
    """A real `diffusers.StableVideoDiffusionPipeline` from `config` with random weights, on `device`."""
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline(**build_components(config, dtype, device))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- rows -------------------------------------------------------------------------------------------------------


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


def _set_forward_chunking(unet: Any, on: bool) -> None:
    if on:
        unet.enable_forward_chunking()  # chunk size 1: over batch*frames (spatial) and frames (temporal)
        return
    for module in unet.modules():
        if hasattr(module, "set_chunk_feed_forward"):
            module.set_chunk_feed_forward(None, dim=0)


def _set_channels_last(model: torch.nn.Module, on: bool) -> None:
    """channels_last for the 4-D (Conv2d) weights. `model.to(memory_format=torch.channels_last)`, the usual way,
    raises on the UNet's and VAE's 5-D temporal Conv3d weights, which stay as they are."""
    memory_format = torch.channels_last if on else torch.contiguous_format
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=memory_format)


def apply(bench: Bench, spec: RowSpec) -> list[str]:
    """Set the pipeline up for `spec` from whatever the last row left; returns notes on options skipped."""
    from diffusers.models.attention_processor import AttnProcessor

    notes: list[str] = []
    pipe = bench.pipe
    if bench.offloaded:
        pipe.remove_all_hooks()
        bench.offloaded = False
    pipe.unet = bench.unet
    pipe.to(bench.device, bench.dtype)  # the dtype too: an OOM inside the VAE's fp32 upcast would leave it fp32
    for name in ("unet", "vae"):
        model = getattr(pipe, name)
        model.set_attn_processor(dict(bench.processors[name]) if spec.sdpa else AttnProcessor())
        _set_channels_last(model, spec.channels_last)
    _set_forward_chunking(bench.unet, spec.forward_chunking)
    if spec.compile:
        if bench.cuda:
            torch._dynamo.reset()  # each compile row pays (and reports) its own compilation
            pipe.unet = torch.compile(bench.unet, mode=bench.compile_mode)
        else:
            notes.append("compile skipped: CUDA only")
    if spec.offload:
        if bench.cuda:
            pipe.enable_model_cpu_offload(device=bench.device)
            bench.offloaded = True
        else:
            notes.append("cpu offload skipped: CUDA only")
    return notes


def _free(bench: Bench) -> None:
    gc.collect()
    if bench.cuda:
        torch.cuda.empty_cache()


def worker_plan(bench: Bench) -> Any:
    """The memory plan the svdq worker (worker/memory.py) makes for this render on this device, defaults on."""
    from worker.memory import DeviceMemory, WeightBytes, footprint_for, plan_memory

    device = None
    if bench.cuda:
        free, total = torch.cuda.mem_get_info(bench.device)
        device = DeviceMemory(free_bytes=free + torch.cuda.memory_reserved(bench.device), total_bytes=total)
    models = (bench.unet, bench.pipe.vae, bench.pipe.image_encoder)
    weights = WeightBytes(*(sum(p.numel() * p.element_size() for p in m.parameters()) for m in models))
    return plan_memory(frames=bench.frames, height=bench.height, width=bench.width,
                       dtype_bytes=torch.finfo(bench.dtype).bits // 8, device=device, weights=weights,
                       footprint=footprint_for("svd-xt" if bench.config.size == "full" else "tiny"))


def run_row(bench: Bench, spec: RowSpec) -> Row:
    """Set up and time one row. An OOM or a failure becomes the row's note, not the run's end."""
    notes: list[str] = []
    if spec.planned:
        plan = worker_plan(bench)
        spec = dataclasses.replace(spec, decode_chunk=plan.decode_chunk_size, forward_chunking=plan.forward_chunking,
                                   offload=plan.offload != "none")
        estimate = "" if plan.estimated_peak_bytes is None else f", est. peak {plan.estimated_peak_bytes / GIB:.1f} GiB"
        notes.append(f"plan {plan.mode}{estimate}")
    row = Row(bench.config.name, spec.name, spec.path, spec.options(bench.dtype, bench.frames))
    chunk = spec.chunk(bench.frames)
    try:
        notes += apply(bench, spec)
        if spec.compile and bench.cuda:
            row.warmup_s = render(bench, chunk).seconds  # compiles; not counted
        _free(bench)
        if bench.cuda:
            torch.cuda.reset_peak_memory_stats(bench.device)
        timings = [render(bench, chunk) for _ in range(bench.repeats)]
        if bench.cuda:
            row.peak_gib = torch.cuda.max_memory_allocated(bench.device) / GIB
        timing = sorted(timings, key=lambda t: t.seconds)[len(timings) // 2]  # the median run
        row.seconds, row.steps_per_s = timing.seconds, timing.steps_per_s
        row.decode_s, row.first_step_s = timing.decode_s, timing.first_step_s
        row.tflops = bench.tflop / row.seconds
        row.x_floor = row.seconds / bench.floor_s
        if bench.repeats > 1:
            spread = max(t.seconds for t in timings) - min(t.seconds for t in timings)
            notes.append(f"median of {bench.repeats}, spread {spread:.2f} s")
    except torch.cuda.OutOfMemoryError:
        notes.append("OOM")
    except Exception as exc:  # noqa: BLE001 - one failing option (e.g. compile) must not lose the other rows
        traceback.print_exc(file=sys.stderr)
        notes.append(f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}")
    finally:
        _free(bench)
    row.note = "; ".join(notes)
    return row


# --- output -----------------------------------------------------------------------------------------------------

COLUMNS = ("model", "row", "path", "options", "s/video", "UNet steps/s", "VAE decode s", "peak GPU GiB",
           "TFLOP/s", "x floor", "warm-up s", "note")


def fmt(value: float, digits: int = 2) -> str:
    if not math.isfinite(value):
        return "—"
    if 0 < abs(value) < 0.1:
        return f"{value:.2g}"  # small (CPU) numbers keep two significant digits instead of rounding to 0
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        peak = fmt(r.peak_gib, 1) if math.isfinite(r.peak_gib) or "OOM" in r.note else "n/a"
        cells = (r.model, r.row, r.path, r.options, fmt(r.seconds), fmt(r.steps_per_s), fmt(r.decode_s), peak,
                 fmt(r.tflops, 1), fmt(r.x_floor), fmt(r.warmup_s, 1), r.note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def header(device: torch.device) -> str:
    import diffusers

    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"svdq GPU benchmark, {date}, device {device_name(device)}, torch {torch.__version__}, "
            f"diffusers {diffusers.__version__}")


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


# --- main -------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("svd", "svd-xt", "both"), default="svd-xt")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--size", choices=("full", "tiny"), default=None,
                   help="full: the published configs (default on CUDA); tiny: small configs (default on CPU)")
    p.add_argument("--tiny", dest="size", action="store_const", const="tiny", help="same as --size tiny")
    p.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                   help="auto: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--width", type=int, default=None, help="default 1024 (full), 128 (tiny)")
    p.add_argument("--height", type=int, default=None, help="default 576 (full), 64 (tiny)")
    p.add_argument("--steps", type=int, default=None, help="default 25 (full), 2 (tiny)")
    p.add_argument("--frames", type=int, default=None, help="default the model's: 14 (svd), 25 (svd-xt)")
    p.add_argument("--rows", default=",".join(ROW_NAMES), help=f"comma-separated, from {','.join(ROW_NAMES)}")
    p.add_argument("--repeats", type=int, default=1, help="timed renders per row; the median is reported")
    p.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS,
                   help="the device's peak rate for the floor (default 990: H100 SXM dense fp16)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode for the compile rows")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed 2-step render before the rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and run details here")
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("CUDA is not available; use --device cpu")
    cuda = args.device.startswith("cuda")
    args.size = args.size or ("full" if cuda else "tiny")
    tiny = args.size == "tiny"
    args.width = args.width or (128 if tiny else 1024)
    args.height = args.height or (64 if tiny else 576)
    args.steps = args.steps or (2 if tiny else 25)
    if args.width % 8 or args.height % 8:
        p.error("width and height must be multiples of 8")
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    args.torch_dtype = dtypes.get(args.dtype, torch.float16 if cuda else torch.float32)
    wanted = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(ROW_NAMES))
    if unknown or not wanted:
        p.error(f"unknown rows {unknown}; choose from {','.join(ROW_NAMES)}")
    args.row_specs = [spec for spec in ROWS if spec.name in wanted]
    return args


def test_image(width: int, height: int) -> Image.Image:
    """A deterministic conditioning image (the content does not change the cost)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _params(n: int) -> str:
    return f"{n / 1e9:.3f} B params" if n >= 1e9 else f"{n / 1e6:.2f} M params"


def bench_model(name: str, args: argparse.Namespace, device: torch.device, out: Callable[[str], None]) -> list[Row]:
    config = model_config(name, args.size)
    frames = args.frames or config.frames
    unet_tflop, vae_tflop = flop_model(config, frames, args.height, args.width)
    tflop = video_tflop(frames, args.height, args.width, args.steps, unet_tflop_per_pass=unet_tflop,
                        vae_decode_tflop=vae_tflop)
    floor_s = floor_seconds(tflop, args.peak_tflops)

    t0 = time.perf_counter()
    pipe = build_pipeline(config, args.torch_dtype, device)
    build_s = time.perf_counter() - t0
    unet_params = param_count(pipe.unet)
    out(f"- {name} ({args.size}): UNet {_params(unet_params)}, VAE {_params(param_count(pipe.vae))}, "
        f"image encoder {_params(param_count(pipe.image_encoder))} (random weights, built in {build_s:.1f} s); "
        f"{frames} frames, {args.width}x{args.height}, {args.steps} steps, CFG, "
        f"{str(args.torch_dtype).removeprefix('torch.')}")
    out(f"- {name} FLOP model: UNet {unet_tflop:.3g} TFLOP/pass and VAE decode {vae_tflop:.3g} TFLOP per 25 frames "
        f"at 1024x576 -> {tflop:.4g} TFLOP per video; floor {floor_s:.3g} s at {args.peak_tflops:g} TFLOP/s")
    if args.size == "full":
        if abs(unet_params / 1.52e9 - 1) > 0.01:
            raise SystemExit(f"the UNet has {unet_params} parameters, not ~1.52 B: the config is wrong")
        unet_count, vae_count = count_tflop(config, frames, args.height, args.width)
        scale = (frames / REF_FRAMES) * (args.height * args.width / REF_PIXELS)
        out(f"- {name} FLOP check, counted on the meta device at this size: UNet {unet_count / scale:.1f} TFLOP/pass "
            f"and VAE decode {vae_count / scale:.1f} TFLOP per 25 frames at 1024x576")

    bench = Bench(config, pipe, device, args.torch_dtype, test_image(args.width, args.height), frames, args.height,
                  args.width, args.steps, tflop, floor_s, args.compile_mode, args.seed, args.repeats)
    if not args.no_warmup:  # CUDA context, cuDNN/cuBLAS heuristics, allocator: paid once, before any row
        apply(bench, RowSpec("warmup", "worker"))
        out(f"- {name} warm-up render (2 steps, not counted): {render(bench, bench.frames, steps=2).seconds:.2f} s")
    rows = []
    for spec in args.row_specs:
        row = run_row(bench, spec)
        print(f"[{name}] {spec.name}: {fmt(row.seconds)} s {row.note}", file=sys.stderr, flush=True)
        rows.append(row)
    del bench, pipe
    torch._dynamo.reset()  # compiled code holds on to the UNet
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; make sure nothing tries
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)

    out(header(device))
    out("")
    rows: list[Row] = []
    for name in ("svd", "svd-xt") if args.model == "both" else (args.model,):
        rows += bench_model(name, args, device, out)
    out("")
    out(table(rows))
    print("\n".join(lines), flush=True)
    if args.json:
        record = {
            "header": lines[0], "device": device_name(device), "torch": torch.__version__,
            "size": args.size, "width": args.width, "height": args.height, "steps": args.steps,
            "dtype": str(args.torch_dtype).removeprefix("torch."), "peak_tflops": args.peak_tflops,
            "notes": [line for line in lines[1:] if line.startswith("- ")],
            "rows": [{k: _json_safe(v) for k, v in asdict(r).items()} for r in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    failed = [r for r in rows if not math.isfinite(r.seconds) and r.note != "OOM"]
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
