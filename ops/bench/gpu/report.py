"""The output: the Markdown table (COLUMNS, fmt, table), the header line naming the device and the library
versions (device_name, header), and the JSON record of a run (write_json)."""

from __future__ import annotations

import argparse
import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from .rows import Row

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


def write_json(args: argparse.Namespace, device: torch.device, lines: Sequence[str], rows: Sequence[Row]) -> None:
    """The run's details, its notes (the printed "- " lines) and its rows, to `args.json`."""
    record = {
        "header": lines[0], "device": device_name(device), "torch": torch.__version__,
        "size": args.size, "width": args.width, "height": args.height, "steps": args.steps,
        "dtype": str(args.torch_dtype).removeprefix("torch."), "peak_tflops": args.peak_tflops,
        "notes": [line for line in lines[1:] if line.startswith("- ")],
        "rows": [{k: _json_safe(v) for k, v in asdict(r).items()} for r in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
