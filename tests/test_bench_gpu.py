"""ops/bench/gpu without a GPU: the issue's FLOP arithmetic, the published configs (counted on the meta
device, so nothing is allocated), and a whole run of the tiny configs on the CPU through the real pipeline, by
calling main(). Nothing here asserts on speed: the numbers only have to be there, positive and finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ops.bench import gpu

# --- the FLOP arithmetic: 80 TFLOP per UNet pass, 174 per VAE decode, at 25 frames of 1024x576 ---


def test_the_svd_xt_floor_at_defaults_is_about_4_2_seconds() -> None:
    tflop = gpu.video_tflop(25, 576, 1024, 25)
    assert tflop == pytest.approx(80 * 2 * 25 + 174)
    assert 4.0 < gpu.floor_seconds(tflop, 990) < 4.4


def test_the_svd_floor_at_defaults_is_about_2_4_seconds() -> None:
    tflop = gpu.video_tflop(14, 576, 1024, 25)
    assert tflop == pytest.approx((80 * 2 * 25 + 174) * 14 / 25)
    assert 2.3 < gpu.floor_seconds(tflop) < 2.5  # the default peak is 990 TFLOP/s


def test_flops_scale_with_frames_pixels_steps_guidance_and_peak() -> None:
    base = gpu.video_tflop(25, 576, 1024, 25)
    assert gpu.video_tflop(25, 288, 1024, 25) == pytest.approx(base / 2)
    assert gpu.video_tflop(50, 576, 1024, 25) == pytest.approx(base * 2)
    assert gpu.video_tflop(25, 576, 1024, 50) == pytest.approx(base + 80 * 2 * 25)
    assert gpu.video_tflop(25, 576, 1024, 25, cfg=False) == pytest.approx(80 * 25 + 174)
    assert gpu.floor_seconds(base, 495) == pytest.approx(2 * gpu.floor_seconds(base, 990))


# --- the published configs, on the meta device ---


def test_the_published_configs_have_svds_parameter_counts() -> None:
    from diffusers import StableVideoDiffusionPipeline

    pipe = gpu.build_pipeline(gpu.model_config("svd-xt"), torch.float16, "meta")  # the real pipeline, no memory
    assert isinstance(pipe, StableVideoDiffusionPipeline)
    assert gpu.param_count(pipe.unet) == pytest.approx(1.52e9, rel=0.01)
    assert gpu.param_count(pipe.vae) == pytest.approx(97.7e6, rel=0.01)
    assert gpu.param_count(pipe.image_encoder) == pytest.approx(632e6, rel=0.01)
    assert pipe.unet.dtype == torch.float16 and pipe.vae_scale_factor == 8
    assert pipe.unet.config.num_frames == 25
    svd, xt = gpu.model_config("svd"), gpu.model_config("svd-xt")
    assert svd.frames == svd.unet["num_frames"] == 14
    assert {**svd.unet, "num_frames": 25} == xt.unet and svd.vae == xt.vae and svd.image_encoder == xt.image_encoder


def test_a_flop_count_of_the_published_svd_xt_config_agrees_with_the_80_and_174_tflop_constants() -> None:
    unet, vae = gpu.count_tflop(gpu.model_config("svd-xt"), 25, 576, 1024)
    assert unet == pytest.approx(gpu.UNET_TFLOP_PER_PASS, rel=0.02)
    assert vae == pytest.approx(gpu.VAE_DECODE_TFLOP, rel=0.02)


def test_unknown_rows_are_refused() -> None:
    with pytest.raises(SystemExit):
        gpu.parse_args(["--device", "cpu", "--rows", "baseline,warp-drive"])


# --- a whole run on the CPU ---


def numbers(cell: str) -> float:
    return float(cell) if cell not in ("—", "n/a") else math.nan


def test_a_tiny_cpu_run_prints_every_row_with_finite_numbers(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.json"
    threads = torch.get_num_threads()
    try:  # one thread: this machine's cores are shared, and oversubscribed threads crawl
        rc = gpu.main(["--device", "cpu", "--tiny", "--model", "both", "--frames", "2", "--width", "64",
                       "--height", "64", "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stdout + stderr[-4000:]
    lines = stdout.splitlines()
    assert lines[0].startswith("svdq GPU benchmark, ")
    assert "device cpu" in lines[0] and f"torch {torch.__version__}" in lines[0] and "diffusers " in lines[0]

    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == list(gpu.COLUMNS)
    assert set(table[1].replace("|", "")) == {"-"}
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table[2:]]
    assert [(r["model"], r["row"]) for r in rows] == [(m, n) for m in ("svd", "svd-xt") for n in gpu.ROW_NAMES]
    for r in rows:
        for column in ("s/video", "UNet steps/s", "VAE decode s", "TFLOP/s", "x floor"):
            value = numbers(r[column])
            assert math.isfinite(value) and value > 0, (r["row"], column, r[column])
        assert r["peak GPU GiB"] == "n/a"  # CUDA only
        assert "decode 2" in r["options"] and "float32" in r["options"]
    by_name = {r["row"]: r for r in rows if r["model"] == "svd"}
    assert by_name["report"]["path"] == "report" and "cpu offload skipped" in by_name["report"]["note"]
    assert "compile skipped" in by_name["compile"]["note"] and "compile skipped" in by_name["all"]["note"]
    assert "classic attn" in by_name["sdpa-off"]["options"]
    assert "fwd chunking" in by_name["fwd-chunking"]["options"]
    assert "channels_last" in by_name["channels-last"]["options"]
    assert by_name["worker-default"]["note"] == "plan cpu"  # worker/memory.py's plan: nothing to plan on a CPU
    assert "floor" in stdout and "warm-up render" in stdout

    record = json.loads(out.read_text())
    assert record["device"] == "cpu" and record["size"] == "tiny" and record["dtype"] == "float32"
    assert len(record["rows"]) == len(rows)
    for row in record["rows"]:
        assert row["seconds"] > 0 and row["decode_s"] > 0 and row["steps_per_s"] > 0
        assert row["seconds"] > row["decode_s"]  # the decode is the tail of the call
        assert math.isfinite(row["tflops"]) and math.isfinite(row["x_floor"])
        assert row["peak_gib"] is None and row["warmup_s"] is None


def test_each_row_switches_its_options_on_and_the_next_row_switches_them_off() -> None:
    # the table's "options" column is the row's spec; this checks the pipeline really is set up that way
    config = gpu.model_config("svd", "tiny")
    pipe = gpu.build_pipeline(config, torch.float32, "cpu")
    bench = gpu.Bench(config, pipe, torch.device("cpu"), torch.float32, gpu.test_image(64, 64), 2, 64, 64, 1, 1.0, 1.0)
    conv = next(p for p in bench.unet.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1)

    def state() -> tuple[set[str], bool, set[object]]:
        processors = {type(p).__name__ for m in (pipe.unet, pipe.vae) for p in m.attn_processors.values()}
        channels_last = conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        chunks = {getattr(m, "_chunk_size", None) for m in bench.unet.modules() if hasattr(m, "_chunk_size")}
        return processors, channels_last, chunks

    seen = set()
    for spec in (*gpu.ROWS, gpu.ROWS[1]):  # ending on baseline: everything off again
        notes = gpu.apply(bench, spec)
        processors, channels_last, chunks = state()
        assert processors == ({"AttnProcessor2_0"} if spec.sdpa else {"AttnProcessor"}), spec.name
        assert channels_last == spec.channels_last, spec.name
        assert chunks == ({1} if spec.forward_chunking else {None}), spec.name
        assert pipe.unet is bench.unet  # compile and offload are CUDA only: skipped, and said so
        assert ("compile skipped: CUDA only" in notes) == spec.compile
        assert ("cpu offload skipped: CUDA only" in notes) == spec.offload
        seen.add((spec.sdpa, spec.channels_last, spec.forward_chunking))
    assert len(seen) == 4  # on and off for each option, not one state throughout
