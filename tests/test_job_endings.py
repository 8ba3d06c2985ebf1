"""Every path by which a job ends runs the one aftermath (models/lifecycle.py): a worker's success and failure,
the cancel of a queued job, a sweep cancel, the reaper failing a dead job, a result reused at submit, a queue
that refuses the job. For each, in-process against a real database and the real entry point of that path: the
job's webhook event is recorded, it is counted once in svdq_jobs_finished_total's counters, and when it was its
image's last open sweep cell the comparison grid is requested at once (not at the next maintenance pass)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery
from sqlalchemy import select

from api.errors import ApiError
from api.services import jobs, sweeps
from api.state import AppState
from models.db import create_db_engine, create_session_factory, session_scope
from models.events import JobSignals
from models.images import clean_image
from models.job_counts import finished_totals
from models.keys import store_key
from models.lifecycle import Effects
from models.migrate import upgrade
from models.params import resolve_params
from models.presence import presence_key
from models.registry import REGISTRY
from models.requests import JobCreate, SweepSpec
from models.settings import Settings
from models.storage import image_key, open_store
from models.tables import ApiKey, Image, Job, Sweep, SweepGrid, WebhookDelivery, utcnow
from ops.harness.images import sample_png
from worker.context import WorkerContext
from worker.maintenance import reap
from worker.render import run_render

HOOK = "https://hooks.example.com/svdq"  # recorded only: nothing is delivered in these tests
QUICK = {"num_inference_steps": 2, "num_frames": 4}


@dataclass
class Sent:
    """What the lifecycle sent: render messages and grid messages, in order."""

    renders: list[tuple[Any, ...]] = field(default_factory=list)
    grids: list[tuple[str, str, str]] = field(default_factory=list)
    refuse: bool = False

    def effects(self, signals: JobSignals) -> Effects:
        def enqueue(*args: Any) -> None:
            if self.refuse:
                raise ConnectionError("the broker is not answering")
            self.renders.append(args)

        return Effects(signals=signals, enqueue=enqueue, enqueue_grid=lambda *a: self.grids.append(a))


@dataclass
class World:
    settings: Settings
    state: AppState
    ctx: WorkerContext
    sent: Sent
    redis: Any

    @property
    def sessions(self) -> Any:
        return self.state.sessions


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path, redis_url: str) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("endings")
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp}/e.db", storage_url=f"file://{tmp}/res",
                        redis_url=redis_url + "/11", cache_dir=tiny_cache, device="cpu", progress_interval_s=0.0,
                        allow_private_urls=True)
    upgrade(settings.database_url)
    r = redis_lib.Redis.from_url(settings.redis_url or "")
    r.flushdb()
    engine = create_db_engine(settings.database_url)
    broker = Celery("t", broker="memory://")
    state = AppState(settings=settings, engine=engine, reads=engine, sessions=create_session_factory(engine),
                     store=open_store(settings), celery=broker, redis=r, aredis=None, signals=JobSignals(r))
    ctx = WorkerContext.load(settings, "tiny", celery=broker)
    sent = Sent()
    state.fx = ctx.fx = sent.effects(JobSignals(r))
    with session_scope(state.sessions) as s:
        store_key(s, "svdq_endings_key_0123456", name="e")
    yield World(settings=settings, state=state, ctx=ctx, sent=sent, redis=r)
    r.flushdb()
    ctx.engine.dispose()
    engine.dispose()


@pytest.fixture
def w(world: World) -> World:
    world.sent.renders.clear()
    world.sent.grids.clear()
    world.sent.refuse = False
    return world


def key_of(w: World) -> ApiKey:
    with w.sessions() as s:
        key = s.scalars(select(ApiKey)).first()
        assert key is not None
        return key


def stored_image(w: World, *, color: tuple[int, int, int] = (200, 60, 30), keep: bool = True) -> str:
    """An image row (and, with keep, its stored bytes) for the key."""
    clean = clean_image(sample_png(color=color), max_pixels=10**6)
    image_id = f"img_{clean.source_sha256[:20]}{'' if keep else 'x'}"
    with session_scope(w.sessions) as s:
        if s.get(Image, image_id) is None:
            s.add(Image(id=image_id, owner_id=key_of(w).id, sha256=clean.source_sha256, width=clean.width,
                        height=clean.height, content_type="image/png", bytes=len(clean.png),
                        storage_key=image_key(image_id), created_at=utcnow()))
    if keep:
        w.state.store.put(image_key(image_id), clean.png, "image/png")
    return image_id


def sweep_of(w: World, image_id: str, cells: int, **job: Any) -> tuple[str, list[str]]:
    """A sweep of one image with `cells` queued cells (fields of `job` set on each), as the API leaves one."""
    params, errors = resolve_params(REGISTRY["tiny"], {**QUICK, "seed": 5})
    assert not errors
    key = key_of(w)
    now = utcnow()
    sweep_id = f"swp_{now.timestamp():.6f}".replace(".", "")
    ids = []
    with session_scope(w.sessions) as s:
        s.add(Sweep(id=sweep_id, owner_id=key.id, name="t", model="tiny", total=cells, created_at=now,
                    spec={"images": [image_id], "params": params, "axes": {"motion_bucket_id": list(range(cells))},
                          "output": {"format": "mp4"}, "postprocess": None, "priority": 5}))
        s.add(SweepGrid(sweep_id=sweep_id, image_id=image_id, position=0, status="pending",
                        updated_at=now - timedelta(minutes=5)))
        for i in range(cells):
            job_id = f"job_{sweep_id[4:]}{i}"
            row = {"status": "queued", "attempts": 0, **job}
            s.add(Job(id=job_id, owner_id=key.id, model="tiny", image_id=image_id,
                      params={**params, "motion_bucket_id": i}, output={"format": "mp4"}, priority=5,
                      progress_step=0, progress_total=2, created_at=now, sweep_id=sweep_id,
                      sweep_cell={"motion_bucket_id": i}, sweep_index=i, webhook_url=HOOK, **row))
            ids.append(job_id)
    return sweep_id, ids


def grid_requested(w: World, sweep_id: str, image_id: str) -> bool:
    """The grid's message went out, and its row says it was asked for just now."""
    with w.sessions() as s:
        grid = s.get(SweepGrid, (sweep_id, image_id))
        assert grid is not None
        fresh = grid.updated_at > utcnow() - timedelta(minutes=1)
    return (sweep_id, image_id, "tiny") in w.sent.grids and fresh


def events_of(w: World, job_id: str) -> list[str]:
    with w.sessions() as s:
        return list(s.scalars(select(WebhookDelivery.event).where(WebhookDelivery.resource_id == job_id)))


def status_of(w: World, job_id: str) -> str:
    with w.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.status


def finished(w: World) -> dict[str, int]:
    """The tiny model's finished-job counters, by status."""
    with w.sessions() as s:
        return {status: n for (model, status), n in finished_totals(s).items() if model == "tiny"}


def rose(before: dict[str, int], w: World) -> dict[str, int]:
    after = finished(w)
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_a_worker_success_that_ends_an_images_last_cell_requests_its_grid_at_once(w: World) -> None:
    image = stored_image(w)
    sweep_id, (first, last) = sweep_of(w, image, 2)
    before = finished(w)
    # When the worker renders the first cell, Then the image still has an open cell: no grid yet
    assert run_render(w.ctx, first).label == "succeeded"
    assert w.sent.grids == [] and events_of(w, first) == ["job.succeeded"]
    # When it renders the last one, Then the grid is requested right away
    assert run_render(w.ctx, last).label == "succeeded"
    assert grid_requested(w, sweep_id, image) and events_of(w, last) == ["job.succeeded"]
    assert rose(before, w) == {"succeeded": 2}


def test_a_worker_failure_requests_the_grid(w: World) -> None:
    image = stored_image(w, color=(10, 200, 10), keep=False)  # its bytes are gone: the render fails
    sweep_id, (cell,) = sweep_of(w, image, 1)
    before = finished(w)
    assert run_render(w.ctx, cell).label == "failed:image_missing"
    assert grid_requested(w, sweep_id, image) and events_of(w, cell) == ["job.failed"]
    assert rose(before, w) == {"failed": 1}


def test_canceling_a_queued_cell_requests_the_grid(w: World) -> None:
    image = stored_image(w)
    sweep_id, (cell,) = sweep_of(w, image, 1)
    before = finished(w)
    with w.sessions() as s:
        job, outcome = jobs.cancel_job(state=w.state, session=s, key=key_of(w), job_id=cell)
    assert outcome == "canceled" and job.status == "canceled"
    assert grid_requested(w, sweep_id, image) and events_of(w, cell) == ["job.canceled"]
    assert rose(before, w) == {"canceled": 1}


def test_canceling_a_sweep_requests_each_grid_whose_cells_all_ended(w: World) -> None:
    image = stored_image(w)
    sweep_id, cells = sweep_of(w, image, 3)
    before = finished(w)
    with w.sessions() as s:
        sweeps.cancel_sweep(state=w.state, session=s, key=key_of(w), sweep_id=sweep_id)
    assert [status_of(w, c) for c in cells] == ["canceled"] * 3
    assert rose(before, w) == {"canceled": 3}
    assert grid_requested(w, sweep_id, image) and w.sent.grids.count((sweep_id, image, "tiny")) == 1


def test_the_reaper_failing_a_dead_cell_requests_the_grid(w: World) -> None:
    image = stored_image(w)
    # Given a cell whose worker died on its last allowed attempt (its lease ran out)
    sweep_id, (cell,) = sweep_of(w, image, 1, status="running", worker="tiny-cpu-w1@gone", attempts=1,
                                 lease_expires_at=utcnow() - timedelta(seconds=5))
    before = finished(w)
    with w.sessions() as s:
        counts = reap(s, fx=w.state.fx, max_attempts=1)
    assert counts["failed"] == 1 and status_of(w, cell) == "failed"
    assert rose(before, w) == {"failed": 1}
    assert grid_requested(w, sweep_id, image) and events_of(w, cell) == ["job.failed"]


def test_a_sweep_whose_cells_are_all_reused_requests_its_grid_at_submit(w: World) -> None:
    image = stored_image(w, color=(60, 60, 220))
    spec = SweepSpec.model_validate({"model": "tiny", "images": [{"image_id": image}],
                                     "params": {**QUICK, "seed": 9}, "axes": {"motion_bucket_id": [20]}})
    key = key_of(w)
    # Given a ready worker whose weights rendered every cell of this sweep before
    w.redis.set(presence_key("tiny", "tiny-cpu-w2@here"), json.dumps({"name": "tiny-cpu-w2@here", "revision": "r1"}),
                ex=60)
    with w.sessions() as s:
        first = sweeps.create_sweep(state=w.state, session=s, key=key, spec=spec, uploads=[])
        with session_scope(w.sessions) as s2:
            for job in s2.scalars(select(Job).where(Job.sweep_id == first.id)):
                job.status, job.result, job.runtime = "succeeded", {"video_key": "x"}, {"revision": "r1"}
        w.sent.grids.clear()
        before = finished(w)
        # When the same study is sent again
        again = sweeps.create_sweep(state=w.state, session=s, key=key, spec=spec, uploads=[])
    # Then every cell finished at once from the stored results, and the grid was requested at submit
    with w.sessions() as s:
        (source,) = s.scalars(select(Job.id).where(Job.sweep_id == first.id)).all()
        reused = s.scalars(select(Job).where(Job.sweep_id == again.id)).all()
    assert [j.status for j in reused] == ["succeeded"] and reused[0].reused_from == source
    assert reused[0].id not in [args[0] for args in w.sent.renders]  # nothing to render
    assert grid_requested(w, again.id, image)
    assert rose(before, w) == {"succeeded": 1}  # the reused cell, counted with the study's commit


def test_a_job_reused_at_submit_is_counted_with_its_insert(w: World) -> None:
    image = stored_image(w, color=(90, 30, 160))
    spec = JobCreate.model_validate({"model": "tiny", "image_id": image, "params": {**QUICK, "seed": 11}})
    key = key_of(w)
    w.redis.set(presence_key("tiny", "tiny-cpu-w3@here"), json.dumps({"name": "tiny-cpu-w3@here", "revision": "r2"}),
                ex=60)
    with w.sessions() as s:
        first = jobs.submit_job(state=w.state, session=s, key=key, spec=spec, data=None, idem_key=None).job
        with session_scope(w.sessions) as s2:
            done = s2.get(Job, first.id)
            assert done is not None
            done.status, done.result, done.runtime = "succeeded", {"video_key": "x"}, {"revision": "r2"}
        w.state.revisions.put("tiny", frozenset({"r2"}))
        before = finished(w)
        # When the same job is sent again
        again = jobs.submit_job(state=w.state, session=s, key=key, spec=spec, data=None, idem_key=None).job
    # Then it ended at once from the stored result, and the counters have it
    assert again.status == "succeeded" and again.reused_from == first.id
    assert rose(before, w) == {"succeeded": 1}


def test_a_job_the_queue_refuses_fails_and_requests_the_grid(w: World) -> None:
    image = stored_image(w, color=(220, 220, 20))
    spec = SweepSpec.model_validate({"model": "tiny", "images": [{"image_id": image}],
                                     "params": {**QUICK, "seed": 3}, "axes": {"motion_bucket_id": [30]},
                                     "reuse": False})
    w.sent.refuse = True
    before = finished(w)
    with w.sessions() as s, pytest.raises(ApiError) as refused:
        sweeps.create_sweep(state=w.state, session=s, key=key_of(w), spec=spec, uploads=[])
    assert refused.value.status == 503 and refused.value.code == "queue_unavailable"
    with w.sessions() as s:
        (sweep_id,) = s.scalars(select(SweepGrid.sweep_id).where(SweepGrid.image_id == image)).all()
        (job,) = s.scalars(select(Job).where(Job.sweep_id == sweep_id)).all()
        assert job.status == "failed" and job.error_code == "queue_unavailable"
    assert grid_requested(w, sweep_id, image)
    assert rose(before, w) == {"failed": 1}
