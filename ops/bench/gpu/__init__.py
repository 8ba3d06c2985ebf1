"""Benchmark the real `StableVideoDiffusionPipeline.__call__` for SVD (14 frames) and SVD-XT (25 frames).

The models are built from the published configs (written out in configs.py) with random weights, so nothing is
downloaded. Speed does not depend on the weights' values, only on the architecture, the dtype and the options.

One run times, on one device, the original report's path (fp16, `enable_model_cpu_offload()`,
`decode_chunk_size=8`) and the svdq worker's path (the pipeline fully on the GPU) with its options toggled one at
a time and together, and prints a Markdown table for ops/bench/RESULTS.md. See ops/bench/README.md.

    python -m ops.bench.gpu --model both                  # on a GPU: full size, fp16, 1024x576, 25 steps
    python -m ops.bench.gpu --device cpu --size tiny      # anywhere: tiny configs, fp32, 128x64, 2 steps
"""

# The package, one module a job; everything public is re-exported here, so `from ops.bench import gpu` and then
# `gpu.video_tflop(...)`, `gpu.main([...])` work as they did when this was one file:
#   flops    the FLOP arithmetic and constants: video_tflop, floor_seconds
#   configs  the published and tiny configs, ModelConfig, model_config, build_components, build_pipeline
#   trace    counting on the meta device: count_tflop, flop_model, LiveBytes, trace_activation_bytes
#   rows     RowSpec, ROWS, ROW_NAMES, Row
#   timing   Bench, StepClock, Timing, render (one timed pipe(...) call)
#   runner   apply (set a row up), worker_plan, run_row (set up and time a row)
#   report   the table (COLUMNS, fmt, table), header, device_name, write_json
#   run      parse_args, bench_model, main; __main__ runs main for `python -m ops.bench.gpu`

from .configs import (
    MODELS,
    SVD_FEATURE_EXTRACTOR,
    SVD_IMAGE_ENCODER,
    SVD_SCHEDULER,
    SVD_UNET,
    SVD_VAE,
    TINY_IMAGE_ENCODER,
    TINY_UNET,
    TINY_VAE,
    ModelConfig,
    build_components,
    build_pipeline,
    model_config,
    param_count,
)
from .flops import (
    PEAK_TFLOPS,
    REF_FRAMES,
    REF_PIXELS,
    UNET_TFLOP_PER_PASS,
    VAE_DECODE_TFLOP,
    floor_seconds,
    video_tflop,
)
from .report import COLUMNS, device_name, fmt, header, table, write_json
from .rows import ROW_NAMES, ROWS, SMALL_DECODE_CHUNK, Row, RowSpec
from .run import bench_model, main, parse_args, test_image
from .runner import GIB, apply, run_row, worker_plan
from .timing import Bench, StepClock, Timing, render
from .trace import LiveBytes, count_tflop, flop_model, trace_activation_bytes

__all__ = [
    "COLUMNS",
    "GIB",
    "MODELS",
    "PEAK_TFLOPS",
    "REF_FRAMES",
    "REF_PIXELS",
    "ROWS",
    "ROW_NAMES",
    "SMALL_DECODE_CHUNK",
    "SVD_FEATURE_EXTRACTOR",
    "SVD_IMAGE_ENCODER",
    "SVD_SCHEDULER",
    "SVD_UNET",
    "SVD_VAE",
    "TINY_IMAGE_ENCODER",
    "TINY_UNET",
    "TINY_VAE",
    "UNET_TFLOP_PER_PASS",
    "VAE_DECODE_TFLOP",
    "Bench",
    "LiveBytes",
    "ModelConfig",
    "Row",
    "RowSpec",
    "StepClock",
    "Timing",
    "apply",
    "bench_model",
    "build_components",
    "build_pipeline",
    "count_tflop",
    "device_name",
    "floor_seconds",
    "flop_model",
    "fmt",
    "header",
    "main",
    "model_config",
    "param_count",
    "parse_args",
    "render",
    "run_row",
    "table",
    "test_image",
    "trace_activation_bytes",
    "video_tflop",
    "worker_plan",
    "write_json",
]
