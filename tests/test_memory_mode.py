"""The worker's GPU modes without a GPU: the memory plan against given free-memory figures (SVD-XT, 25 frames,
1024x576, fp16), its constants against a meta-device trace of the published configs, the plan applied by the
real tiny pipeline on the CPU, the compile warm-up at worker start (real Dynamo with its `eager` backend: tracing,
guards and recompilation are real, only inductor's code generation is left out), and what a worker advertises."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from pydantic import ValidationError

from models.presence import ready_workers
from models.settings import Settings
from worker.device import describe_device
from worker.heartbeat import Heartbeat
from worker.memory import (
    GIB,
    SVD_FOOTPRINT,
    DeviceMemory,
    MemoryPlan,
    balanced_chunk,
    frames_per_chunk,
    plan_memory,
    svd_weights,
)
from worker.pipeline import PipelineHolder

XT = {"frames": 25, "height": 576, "width": 1024, "dtype_bytes": 2, "weights": svd_weights()}


def plan_on(gib: float | None, **kw: Any) -> MemoryPlan:
    device = None if gib is None else DeviceMemory(free_bytes=int(gib * GIB), total_bytes=int(gib * GIB))
    return plan_memory(**{**XT, **kw}, device=device)


def shape(plan: MemoryPlan) -> tuple[str, int, bool, str, bool]:
    return plan.mode, plan.decode_chunk_size, plan.forward_chunking, plan.offload, plan.fits


# --- the plan against given free memory ---


@pytest.mark.parametrize(("gib", "expected"), [
    (80, ("full", 13, False, "none", True)),  # the 24 GiB budget: the same plan (and bytes) as a 24 GB card
    (24, ("full", 13, False, "none", True)),
    (16, ("full", 7, False, "none", True)),
    (12, ("low", 5, True, "none", True)),  # the UNet fits only with forward chunking
    (8, ("offload", 5, True, "model_cpu_offload", False)),  # nothing is estimated to fit: the lowest mode, tried
    (None, ("cpu", 8, False, "none", True)),  # no CUDA: the report's decode chunk, nothing planned
])
def test_each_free_memory_figure_gives_its_plan(gib: float | None, expected: tuple[Any, ...]) -> None:
    plan = plan_on(gib)
    assert shape(plan) == expected
    assert plan.reasons and plan.reasons[-1].startswith(expected[0])


def test_the_default_plan_keeps_svd_xt_under_24_gb_on_any_card_from_24_gb_up() -> None:
    for gib in (24, 32, 40, 48, 80, 141):
        plan = plan_on(gib)
        assert plan.fits and plan.estimated_peak_bytes is not None and plan.estimated_peak_bytes <= 24e9, gib
        assert shape(plan) == shape(plan_on(24))  # one plan, so one video for one seed, on all of them


def test_without_a_budget_an_80_gb_card_decodes_all_frames_at_once() -> None:
    plan = plan_on(80, budget_bytes=None)
    assert shape(plan) == ("full", 25, False, "none", True)
    assert plan.estimated_peak_bytes is not None and plan.estimated_peak_bytes > 24e9


def test_a_low_memory_plan_says_why_each_bigger_mode_was_passed_over() -> None:
    reasons = " | ".join(plan_on(8).reasons)
    assert "full: the UNet needs 13.63 GB > 7.52 GB" in reasons
    assert "low: the UNet needs 9.74 GB > 7.52 GB" in reasons and "tried anyway" in reasons


def test_a_jobs_own_decode_chunk_size_is_kept() -> None:
    assert plan_on(12, decode_chunk_size=2).decode_chunk_size == 2
    assert plan_on(None, decode_chunk_size=3).decode_chunk_size == 3
    assert plan_on(80, decode_chunk_size=99).decode_chunk_size == 25  # at most the frames
    too_big = plan_on(24, decode_chunk_size=25)  # kept, and the plan says it will not fit
    assert too_big.decode_chunk_size == 25 and not too_big.fits
    assert any("the job's (memory allows 14)" in r for r in too_big.reasons)


@pytest.mark.parametrize(("mode", "gib", "expected"), [
    ("low", 80, ("low", 13, True, "none", True)),
    ("offload", 80, ("offload", 13, True, "model_cpu_offload", True)),
    ("full", 8, ("full", 2, False, "none", False)),
    ("auto", 12, ("low", 5, True, "none", True)),
])
def test_a_forced_memory_mode_overrides_the_choice(mode: str, gib: int, expected: tuple[Any, ...],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # the setting, as an operator sets it, through the holder the worker builds from it
    monkeypatch.setenv("SVDQ_MEMORY_MODE", mode)
    holder = PipelineHolder.from_settings(Settings(_env_file=None), model="svd-xt", source="unused")  # type: ignore[call-arg]
    assert holder.memory_mode == mode and holder.budget_bytes == 24 * GIB
    plan = plan_on(gib, mode=holder.memory_mode)
    assert shape(plan) == expected
    assert mode == "auto" or f"{mode} forced by the memory-mode setting" in plan.reasons


def test_an_unknown_memory_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVDQ_MEMORY_MODE", "tiny")
    with pytest.raises(ValidationError, match="memory_mode"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="choose one of auto, full, low, offload"):
        plan_on(24, mode="tiny")


def test_chunks_are_what_fits_and_balanced() -> None:
    assert frames_per_chunk(10 * GIB, GIB, reserve_bytes=2 * GIB) == 8
    assert frames_per_chunk(10 * GIB, GIB, cap=5) == 5 and frames_per_chunk(GIB // 2, GIB) == 1
    assert balanced_chunk(25, 15) == 13 and balanced_chunk(25, 8) == 7 and balanced_chunk(4, 9) == 4
    with pytest.raises(ValueError):
        frames_per_chunk(GIB, 0)


def test_the_footprint_matches_a_meta_device_trace_of_the_published_config() -> None:
    from ops.bench import gpu

    config, latent_px = gpu.model_config("svd-xt"), 72 * 128
    unet = gpu.trace_activation_bytes(config, "unet", 25, 576, 1024)
    chunked = gpu.trace_activation_bytes(config, "unet", 25, 576, 1024, forward_chunking=True)
    decode = gpu.trace_activation_bytes(config, "vae", 2, 576, 1024)
    assert unet / (2 * 25 * latent_px) == pytest.approx(SVD_FOOTPRINT.unet_per_latent_px, rel=0.005)
    assert chunked / (2 * 25 * latent_px) == pytest.approx(SVD_FOOTPRINT.unet_chunked_per_latent_px, rel=0.005)
    assert decode / (2 * 2 * 576 * 1024) == pytest.approx(SVD_FOOTPRINT.decode_per_px, rel=0.005)


# --- the plan applied by the real tiny pipeline on the CPU ---


@pytest.fixture(scope="module")
def holder(tiny_cache: Path) -> PipelineHolder:
    from models.tiny import ensure_tiny

    h = PipelineHolder(model="tiny", source=str(ensure_tiny(tiny_cache)), device="cpu")
    h.load()
    return h


PARAMS = {"width": 128, "height": 64, "num_frames": 4, "num_inference_steps": 2, "fps": 7, "motion_bucket_id": 127,
          "noise_aug_strength": 0.02, "min_guidance_scale": 1.0, "max_guidance_scale": 3.0, "decode_chunk_size": None,
          "seed": 5}
IMAGE = Image.new("RGB", (128, 64), (90, 140, 200))


def chunk_sizes(h: PipelineHolder) -> set[Any]:
    return {getattr(m, "_chunk_size", None) for m in h.pipe.unet.modules() if hasattr(m, "_chunk_size")}


def test_a_cpu_render_records_what_ran_and_no_gpu_peak(holder: PipelineHolder) -> None:
    holder.render(IMAGE, PARAMS, lambda step, total: None)
    opts = holder.last_options
    assert opts["attention"] == "AttnProcessor2_0"  # fused SDPA, diffusers' default, checked at load
    assert opts["peak_gpu_memory_bytes"] is None and opts["channels_last"] is False
    assert opts["compiled"] is False and opts["compile_warm"] is False and opts["model_offload"] == "none"
    assert opts["memory_plan"]["mode"] == "cpu" and holder.last_memory_mode == {
        "mode": "cpu", "decode_chunk_size": 4, "forward_chunking": False}


def test_forward_chunking_and_offload_run_only_when_the_plan_says_so(holder: PipelineHolder,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # offload needs CUDA: its two diffusers calls are recorded at that boundary; the render itself is real
    calls: list[str] = []
    seen: list[set[Any]] = []
    monkeypatch.setattr(holder.pipe, "enable_model_cpu_offload", lambda device: calls.append(f"offload {device}"))
    monkeypatch.setattr(holder.pipe, "remove_all_hooks", lambda: calls.append("remove hooks"))
    real_call = holder._call

    def spy(*a: Any) -> Any:
        seen.append(chunk_sizes(holder))
        return real_call(*a)

    monkeypatch.setattr(holder, "_call", spy)
    low = dataclasses.replace(plan_on(8), decode_chunk_size=2)
    monkeypatch.setattr(holder, "plan", lambda params: low)
    holder.render(IMAGE, PARAMS, lambda step, total: None)
    assert calls == ["offload cpu", "remove hooks"] and seen == [{1}]
    assert chunk_sizes(holder) == {None} and holder.last_options["model_offload"] == "model_cpu_offload"
    assert holder.last_memory_mode == {"mode": "offload", "decode_chunk_size": 2, "forward_chunking": True}
    calls.clear()
    monkeypatch.setattr(holder, "plan", lambda params: plan_on(24))
    holder.render(IMAGE, PARAMS, lambda step, total: None)
    assert calls == [] and seen[-1] == {None}


# --- compile: warm-up at worker start, never in a job ---


@pytest.fixture
def worker(tmp_path: Path, tiny_cache: Path) -> Iterator[Any]:
    from celery import Celery

    from models.db import session_scope
    from models.keys import store_key
    from models.migrate import upgrade
    from worker.context import WorkerContext

    made: list[WorkerContext] = []

    def make(**settings: Any) -> WorkerContext:
        s = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/w{len(made)}.db",  # type: ignore[call-arg]
                     storage_url=f"file://{tmp_path}/res", cache_dir=tiny_cache, device="cpu", **settings)
        upgrade(s.database_url)
        ctx = WorkerContext.load(s, "tiny", celery=Celery("t", broker="memory://"))
        with session_scope(ctx.sessions) as session:
            store_key(session, "svdq_memory_mode_key_1", name="w")
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.engine.dispose()


def test_with_compile_on_the_warm_up_runs_once_at_start_and_jobs_pay_no_compilation(
        worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_worker_render import load, make_job
    from worker.pipeline import compiled_graphs
    from worker.render import run_render

    renders: list[int] = []
    real_call = PipelineHolder._call

    def spy(self: PipelineHolder, *a: Any) -> Any:
        renders.append(a[1]["num_frames"])
        return real_call(self, *a)

    monkeypatch.setattr(PipelineHolder, "_call", spy)
    before = compiled_graphs()
    # Given a worker with compile on (Dynamo for real, its eager backend instead of inductor's code generation)
    # When it starts (its context is built, the pipeline loaded)
    ctx = worker(compile=True, compile_backend="eager")
    # Then one warm-up render at the model's default size compiled the UNet
    assert renders == [14] and compiled_graphs() > before and ctx.holder.warmup_seconds is not None
    assert ctx.holder.record()["compile_warmup_seconds"] > 0
    # and jobs of that size afterwards compile nothing and say so
    for seed in (1, 2):
        job_id = make_job(ctx, seed=seed, num_frames=14)
        assert run_render(ctx, job_id).label == "succeeded"
        pipeline = load(ctx, job_id).runtime["pipeline"]  # type: ignore[index]
        assert pipeline["compiled"] is True and pipeline["compile_warm"] is True and pipeline["compilations"] == 0
    assert renders == [14, 14, 14]
    # a job of another size does recompile, and is recorded as not warm
    job_id = make_job(ctx, num_frames=6)
    assert run_render(ctx, job_id).label == "succeeded"
    pipeline = load(ctx, job_id).runtime["pipeline"]  # type: ignore[index]
    assert pipeline["compilations"] > 0 and pipeline["compile_warm"] is False


def test_with_compile_off_a_worker_starts_without_a_warm_up_render(worker: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    renders: list[int] = []
    monkeypatch.setattr(PipelineHolder, "_call", lambda self, *a: renders.append(1))
    ctx = worker()
    assert renders == [] and ctx.holder.warmup_seconds is None and ctx.holder.record()["compile_warmup_seconds"] is None


# --- what a worker advertises ---


def test_a_gpu_worker_names_its_physical_gpu_and_card() -> None:
    label = describe_device("cuda:0", visible="3", name="NVIDIA H100 80GB HBM3", total_bytes=int(79.1 * GIB))
    assert label == "cuda:0 (GPU 3: NVIDIA H100 80GB HBM3, 79.1 GiB)"
    assert describe_device("cuda:1", visible="4,6", name="NVIDIA L4", total_bytes=None) == "cuda:1 (GPU 6: NVIDIA L4)"
    assert describe_device("cuda", visible=None, name="NVIDIA L4", total_bytes=None) == "cuda (GPU 0: NVIDIA L4)"
    assert describe_device("cpu", visible="0", name=None, total_bytes=None) == "cpu"


def test_the_heartbeat_advertises_the_device_as_models_lists_it(holder: PipelineHolder, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    holder.device_label = describe_device("cuda:0", visible="2", name="NVIDIA A10G", total_bytes=None)
    try:
        beat = Heartbeat(r, "tiny", "tiny-gpu2-w1@host", holder.presence())
        beat.start()
        (record,) = [w for w in ready_workers(r, "tiny") if w["name"] == "tiny-gpu2-w1@host"]
        assert record["device"] == "cuda:0 (GPU 2: NVIDIA A10G)" and record["model"] == "tiny"
        assert record["compiled"] is False and record["memory_mode"] == "auto"
        beat.stop()
    finally:
        holder.device_label = holder.device
    assert holder.presence()["device"] == "cpu"
