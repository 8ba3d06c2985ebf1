"""Running one row: apply sets the pipeline up for a RowSpec from whatever the last row left (attention
processors, channels_last, forward chunking, compile, offload), worker_plan asks worker/memory.py for the svdq
worker's memory plan, and run_row sets up and times a row, turning an OOM or a failure into the row's note."""

from __future__ import annotations

import dataclasses
import gc
import sys
import traceback
from typing import Any

import torch

from .rows import Row, RowSpec
from .timing import Bench, render

GIB = 1024**3


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
