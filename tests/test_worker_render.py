"""The worker's render path in-process (Celery's in-memory broker): each way a job can go wrong ends it with a
code and a message or puts it back in the queue, and a message for a job that is not queued renders nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from celery import Celery

from models.db import session_scope
from models.images import clean_image
from models.keys import store_key
from models.migrate import upgrade
from models.params import resolve_params
from models.registry import REGISTRY
from models.settings import Settings
from models.storage import StorageError, image_key
from models.tables import ApiKey, Image, Job, utcnow
from ops.harness.images import sample_png
from worker.context import WorkerContext
from worker.render import run_render


def tiny_worker_context(tmp: Path, tiny_cache: Path, api_key: str) -> Iterator[WorkerContext]:
    """A tiny-model worker context on its own SQLite database and result directory, with one API key (the
    owner of the jobs make_job writes); the engine is disposed after."""
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp}/w.db", storage_url=f"file://{tmp}/res",
                        cache_dir=tiny_cache, device="cpu", progress_interval_s=0.0)
    upgrade(settings.database_url)
    c = WorkerContext.load(settings, "tiny", celery=Celery("t", broker="memory://"))
    with session_scope(c.sessions) as s:
        store_key(s, api_key, name="w")
    yield c
    c.engine.dispose()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Iterator[WorkerContext]:
    yield from tiny_worker_context(tmp_path_factory.mktemp("worker"), tiny_cache, "svdq_worker_unit_key_1")


def make_job(ctx: WorkerContext, *, store_image: bool = True, status: str = "queued", **params: object) -> str:
    clean = clean_image(sample_png(), max_pixels=10**6)
    with session_scope(ctx.sessions) as s:
        key = s.query(ApiKey).first()
        assert key is not None
        img_id = "img_" + clean.source_sha256[:20] + ("" if store_image else "x")
        if s.get(Image, img_id) is None:
            s.add(Image(id=img_id, owner_id=key.id, sha256=clean.source_sha256, width=clean.width,
                        height=clean.height, content_type="image/png", bytes=len(clean.png),
                        storage_key=image_key(img_id), created_at=utcnow()))
        if store_image:
            ctx.store.put(image_key(img_id), clean.png, "image/png")
        p, errors = resolve_params(REGISTRY["tiny"], {"num_inference_steps": 2, "num_frames": 4, **params})
        assert not errors
        job_id = f"job_{len(s.query(Job).all())}"
        s.add(Job(id=job_id, owner_id=key.id, status=status, model="tiny", image_id=img_id, params=p,
                  output={"format": "mp4"}, priority=5, attempts=0, progress_step=0, progress_total=2,
                  created_at=utcnow()))
    return job_id


def load(ctx: WorkerContext, job_id: str) -> Job:
    with ctx.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_a_job_renders_and_records_progress_result_and_runtime(ctx: WorkerContext) -> None:
    job_id = make_job(ctx, seed=3)
    assert run_render(ctx, job_id).label == "succeeded"
    job = load(ctx, job_id)
    assert job.status == "succeeded" and job.progress_stage == "done" and job.progress_step == 2
    assert job.result is not None and ctx.store.exists(job.result["video_key"])
    assert job.runtime is not None and job.runtime["seed"] == 3 and job.runtime["timings"]["render_s"] > 0


def test_the_same_seed_renders_the_same_bytes(ctx: WorkerContext) -> None:
    a, b = make_job(ctx, seed=11), make_job(ctx, seed=11)
    run_render(ctx, a)
    run_render(ctx, b)
    ra, rb = load(ctx, a).result, load(ctx, b).result
    assert ra is not None and rb is not None and ra["sha256"] == rb["sha256"]


def test_a_message_for_a_job_that_is_not_queued_renders_nothing(ctx: WorkerContext) -> None:
    job_id = make_job(ctx, status="canceled")
    assert run_render(ctx, job_id).label == "skipped:canceled"
    assert load(ctx, job_id).status == "canceled" and load(ctx, job_id).attempts == 0
    assert run_render(ctx, "job_does_not_exist").label == "missing"


def test_a_missing_image_fails_the_job_with_image_missing(ctx: WorkerContext) -> None:
    job_id = make_job(ctx, store_image=False)
    assert run_render(ctx, job_id).label == "failed:image_missing"
    job = load(ctx, job_id)
    assert job.status == "failed" and job.error_code == "image_missing"
    assert "upload it again" in (job.error_message or "")


def test_a_render_error_fails_the_job_with_render_failed(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("the UNet exploded")

    monkeypatch.setattr(ctx.holder, "render", boom)
    job_id = make_job(ctx)
    assert run_render(ctx, job_id).label == "failed:render_failed"
    assert "the UNet exploded" in (load(ctx, job_id).error_message or "")


def test_out_of_memory_names_the_size_and_frames(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def oom(*a: object, **k: object) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ctx.holder, "render", oom)
    job_id = make_job(ctx)
    assert run_render(ctx, job_id).label == "failed:out_of_memory"
    assert "4 frames at 128x64" in (load(ctx, job_id).error_message or "")


def test_a_storage_outage_is_retried_four_times_then_the_job_is_requeued(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls, sent = [], []

    def down(*a: object, **k: object) -> None:
        calls.append(1)
        raise StorageError("connection refused")

    job_id = make_job(ctx)
    monkeypatch.setattr(ctx, "fx", replace(ctx.fx, enqueue=lambda *a: sent.append(a)))
    monkeypatch.setattr(ctx.store, "put", down)
    monkeypatch.setattr("worker.render.time.sleep", lambda s: None)
    # When every upload of the job's first attempt fails
    assert run_render(ctx, job_id).label == "retrying:storage_unavailable"
    # Then the upload was tried four times, and the job waits in the queue for its next attempt (the last attempt
    # fails it: test_transient_failures_stop_at_max_attempts)
    assert len(calls) == 4
    assert load(ctx, job_id).status == "queued" and sent == [(job_id, "tiny", 5, 2.0)]


def test_a_render_past_its_time_limit_fails_with_time_limit_exceeded(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ctx.settings, "time_limit_s", 1e-6)
    job_id = make_job(ctx)
    assert run_render(ctx, job_id).label == "failed:time_limit_exceeded"
    job = load(ctx, job_id)
    assert job.error_code == "time_limit_exceeded" and "time limit" in (job.error_message or "")
    assert job.result is None


def test_a_transient_failure_requeues_with_backoff_then_succeeds(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sent: list[tuple[str, str, int, float]] = []
    monkeypatch.setattr(ctx, "fx", replace(ctx.fx, enqueue=lambda *a: sent.append(a)))
    monkeypatch.setattr("worker.render.time.sleep", lambda s: None)
    job_id = make_job(ctx)
    real_put = ctx.store.put

    def down(*a: object, **k: object) -> None:
        raise StorageError("connection refused")

    # Given storage is down for the first attempt
    monkeypatch.setattr(ctx.store, "put", down)
    assert run_render(ctx, job_id).label == "retrying:storage_unavailable"
    job = load(ctx, job_id)
    # Then the job is queued again, its error visible, and re-enqueued with a delay
    assert job.status == "queued" and job.attempts == 1 and job.error_code == "storage_unavailable"
    assert sent == [(job_id, "tiny", 5, 2.0)]
    # When storage is back and the message arrives, Then it succeeds on attempt 2
    monkeypatch.setattr(ctx.store, "put", real_put)
    assert run_render(ctx, job_id).label == "succeeded"
    job = load(ctx, job_id)
    assert job.status == "succeeded" and job.attempts == 2 and job.error_code is None


def test_transient_failures_stop_at_max_attempts(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ctx, "fx", replace(ctx.fx, enqueue=lambda *a: None))
    monkeypatch.setattr("worker.render.time.sleep", lambda s: None)
    job_id = make_job(ctx)

    def down(*a: object, **k: object) -> None:
        raise StorageError("connection refused")

    monkeypatch.setattr(ctx.store, "put", down)
    outcomes = [run_render(ctx, job_id).label for _ in range(ctx.settings.max_attempts)]
    assert outcomes == ["retrying:storage_unavailable"] * (ctx.settings.max_attempts - 1) + [
        "failed:storage_unavailable"]
    assert load(ctx, job_id).attempts == ctx.settings.max_attempts


def test_a_cancel_flag_in_the_row_stops_the_render_even_without_redis(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from models.states import request_cancel

    assert ctx.signals.redis is None  # this context has no Redis: only the row carries the cancel
    job_id = make_job(ctx, num_inference_steps=6)
    real_render = ctx.holder.render

    def render_then_cancel(image, params, on_step, on_latents=None):  # type: ignore[no-untyped-def]
        def step(i: int, total: int) -> None:
            if i == 2:
                with ctx.sessions() as s:
                    assert request_cancel(s, job_id=job_id) == "requested"
            on_step(i, total)

        return real_render(image, params, step, on_latents)

    monkeypatch.setattr(ctx.holder, "render", render_then_cancel)
    assert run_render(ctx, job_id).label == "canceled:canceled"
    job = load(ctx, job_id)
    assert job.status == "canceled" and "at step 2 of 6" in (job.error_message or "") and job.result is None


class OomOnce:
    """Wraps the pipeline: the first `fail` calls raise CUDA's out-of-memory error, then it renders."""

    def __init__(self, pipe, fail: int) -> None:  # type: ignore[no-untyped-def]
        self.pipe, self.fail, self.calls = pipe, fail, []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.pipe, name)

    def __call__(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.calls.append(kw["decode_chunk_size"])
        if len(self.calls) <= self.fail:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.pipe(*a, **kw)


def chunked_layers(ctx: WorkerContext) -> set[object]:
    return {getattr(m, "_chunk_size", None) for m in ctx.holder.pipe.unet.modules() if hasattr(m, "_chunk_size")}


def test_out_of_memory_retries_once_with_small_chunks_and_records_it(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    wrapper = OomOnce(ctx.holder.pipe, fail=1)
    monkeypatch.setattr(ctx.holder, "pipe", wrapper)
    job_id = make_job(ctx, decode_chunk_size=4)
    assert run_render(ctx, job_id).label == "succeeded"
    assert wrapper.calls == [4, 1]  # the asked-for chunk, then decode chunk 1
    runtime = load(ctx, job_id).runtime
    assert runtime is not None
    assert runtime["memory"] == {"mode": "low_memory_retry", "decode_chunk_size": 1, "forward_chunking": True}
    assert chunked_layers(ctx) == {None}  # forward chunking is switched off again for the next job


def test_out_of_memory_twice_fails_with_out_of_memory(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ctx.holder, "pipe", OomOnce(ctx.holder.pipe, fail=2))
    job_id = make_job(ctx)
    assert run_render(ctx, job_id).label == "failed:out_of_memory"
    assert "also with decode chunk 1" in (load(ctx, job_id).error_message or "")


def test_a_finished_render_keeps_its_result_through_a_database_outage(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    import worker.render as render_mod

    real_finish = render_mod.finish_job
    calls: list[int] = []

    def flaky_finish(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) <= 2:  # the database is down for the first two writes
            raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection unexpectedly"))
        return real_finish(*a, **kw)

    renders: list[int] = []
    real_render = ctx.holder.render
    monkeypatch.setattr(ctx.holder, "render", lambda *a, **kw: renders.append(1) or real_render(*a, **kw))
    monkeypatch.setattr(render_mod, "finish_job", flaky_finish)
    monkeypatch.setattr("worker.render.time.sleep", lambda s: None)
    job_id = make_job(ctx)
    assert run_render(ctx, job_id).label == "succeeded"
    assert len(calls) == 3 and len(renders) == 1  # the status write was retried; the render was not
    assert load(ctx, job_id).status == "succeeded"


def test_a_claim_during_a_short_database_outage_waits_and_renders_once(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    import worker.render as render_mod

    real_claim, calls = render_mod.claim_job, []

    def flaky_claim(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("UPDATE jobs", {}, Exception("connection refused"))
        return real_claim(*a, **kw)

    monkeypatch.setattr(render_mod, "claim_job", flaky_claim)
    monkeypatch.setattr("worker.render.time.sleep", lambda s: None)
    job_id = make_job(ctx)
    assert run_render(ctx, job_id).label == "succeeded" and len(calls) == 3


def test_a_claim_through_a_long_database_outage_puts_the_message_back(ctx: WorkerContext, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Given a database that stays away longer than db_retry_s
    from celery.exceptions import Reject
    from sqlalchemy.exc import OperationalError

    import worker.render as render_mod
    from models.queue import RENDER_TASK
    from worker.tasks import register_tasks

    def down(*a, **kw):  # type: ignore[no-untyped-def]
        raise OperationalError("UPDATE jobs", {}, Exception("connection refused"))

    monkeypatch.setattr(render_mod, "claim_job", down)
    monkeypatch.setattr(ctx.settings, "db_retry_s", 0.0)
    monkeypatch.setattr("worker.render.time.sleep", lambda s: None)
    job_id = make_job(ctx)
    app = Celery("t", broker="memory://")
    register_tasks(app, ctx)
    # When the render task gets the message, Then it rejects it back onto the queue instead of acknowledging it
    with pytest.raises(Reject) as rejected:
        app.tasks[RENDER_TASK].run(job_id)
    assert rejected.value.requeue is True
    assert load(ctx, job_id).status == "queued"  # and the job is untouched, ready for the redelivery
