"""The command line: parse_args (the options and their defaults for a GPU or a CPU run), bench_model (build one
model, print its sizes and FLOP model, warm it up and time each chosen row) and main (every model, then the header,
the notes and the table on stdout, and the JSON record if asked). `python -m ops.bench.gpu` runs main."""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .configs import build_pipeline, model_config, param_count
from .flops import PEAK_TFLOPS, REF_FRAMES, REF_PIXELS, floor_seconds, video_tflop
from .report import fmt, header, table, write_json
from .rows import ROW_NAMES, ROWS, Row, RowSpec
from .runner import apply, run_row
from .timing import Bench, render
from .trace import count_tflop, flop_model


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from .. import gpu  # the package (ops.bench.gpu): its docstring is the command's description

    p = argparse.ArgumentParser(prog="python -m ops.bench.gpu", description=gpu.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
        write_json(args, device, lines, rows)
    failed = [r for r in rows if not math.isfinite(r.seconds) and r.note != "OOM"]
    return 1 if failed else 0
