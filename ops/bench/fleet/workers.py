"""One simulated GPU worker: a real WorkerContext (worker/context.py) whose pipeline is never loaded, driving the
control-plane calls a real worker makes for each job, with the worker's own code and in run_render's order
(worker/render.py, worker/produce.py, worker/monitor.py, worker/tasks.py):

- claim: worker.render's own claim path (claim_job through the worker's database-retry loop, then the row), then
  the queue index entry removed (signals.dequeued), inside a RenderObserver as the Celery task wraps it;
- progress: a worker.monitor.JobMonitor, called where produce() calls it (before the first step, after each
  denoising step, before encoding and before uploading): the cancel-flag check, the live ProgressEvent on Redis
  pub/sub, and record_progress at most every progress_interval_s (and at the forced checkpoints);
- lease: renew_lease every max(0.2, lease_s / 4) after the last renewal returned, LeaseKeeper's loop as a chain;
- finish: finish_job through the same retry loop, with a result and runtime shaped like produce()'s for an SVD-XT
  video on an H100, then models.lifecycle.job_ended (status event, queue index, the webhook event row), then the
  RenderObserver's job-time record;
- heartbeat: worker.heartbeat.Heartbeat, the presence key the API reads.

The render only waits: render_s / steps per denoising step, after each step's callback returned (as the GPU
does: a slow callback makes a slower render). Not simulated: reading the image, encoding, uploading, Celery's
task events, the metrics exporter and the webhook sender's poll."""

from __future__ import annotations

import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from kombu.message import Message
from sqlalchemy import create_engine

from models import lifecycle
from models.db import create_session_factory, session_scope
from models.events import JobSignals
from models.presence import EVERY_S
from models.queue import make_enqueue, make_grid_enqueue
from models.registry import get_spec
from models.settings import Settings
from models.states import finish_job, renew_lease
from models.storage import job_key, open_store
from models.tables import Job
from ops.bench.fleet.plan import MODEL
from ops.bench.fleet.samples import Samples
from worker.context import WorkerContext, worker_name
from worker.heartbeat import Heartbeat
from worker.metrics import RenderObserver, WorkerMetrics
from worker.monitor import JobMonitor
from worker.outcomes import LOST, MISSING, SUCCEEDED, JobStop, RenderOutcome
from worker.pipeline import PipelineHolder

# the worker's own claim and database-retry paths, private to worker/render.py: used as they are, so this
# simulation cannot drift from what a worker does
from worker.render import _claim, _retry_db

log = logging.getLogger("svdq.bench.fleet")
Schedule = Callable[[float, Callable[[], float | None]], None]


def base_context(settings: Settings, celery: Celery, *, threads: int) -> WorkerContext:
    """What every simulated worker shares (each gets a copy with its own name). The engine has create_db_engine's
    settings with its pool sized to the thread pool: one pool serves the whole fleet here, as a transaction-mode
    pooler would in front of a real one (5,000 workers cannot each hold connections to one PostgreSQL)."""
    spec = get_spec(MODEL)
    assert spec is not None
    engine = create_engine(settings.database_url, pool_pre_ping=True, pool_size=threads, max_overflow=4,
                           pool_timeout=30, connect_args={"connect_timeout": 2})
    signals = JobSignals(redis.Redis.from_url(settings.redis_url or "", socket_timeout=5))
    # never loaded: "cuda:0" given (not "auto"), so nothing imports torch
    holder = PipelineHolder.from_settings(settings.model_copy(update={"device": "cuda:0"}), model=MODEL,
                                          source=settings.model_source(MODEL) or MODEL)
    holder.revision, holder.instance_id, holder.dtype = "fleet-sim-revision", secrets.token_hex(6), "float16"
    return WorkerContext(settings=settings, spec=spec, name="", engine=engine, sessions=create_session_factory(engine),
                         store=open_store(settings), holder=holder, signals=signals,
                         fx=lifecycle.Effects(signals=signals, enqueue=make_enqueue(celery),
                                              enqueue_grid=make_grid_enqueue(celery)),
                         metrics=WorkerMetrics(MODEL))


def render_record(ctx: WorkerContext, job: Job, render_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """What produce() returns for this job: the result row and the reproducibility record, with a GPU's values."""
    p = job.params
    result = {"video_key": job_key(job.id, "video.mp4"), "poster_key": job_key(job.id, "poster.jpg"),
              "content_type": "video/mp4", "bytes": random.randint(1_500_000, 3_500_000),
              "sha256": secrets.token_hex(32), "frames": p["num_frames"], "width": p["width"], "height": p["height"],
              "fps": p["fps"]}
    h = ctx.holder
    runtime = {
        "model": h.model, "source": h.source, "revision": h.revision, "dtype": h.dtype, "device": "cuda",
        "device_name": "cuda:0 (NVIDIA H100 80GB HBM3)", "torch": "2.5.1", "diffusers": "0.31.0",
        "pipeline_instance": h.instance_id, "pipeline_loads": 1, "pipeline_load_seconds": 41.3,
        "compile_warmup_seconds": None, "worker": ctx.name, "seed": p["seed"], "postprocess": [],
        "memory": {"mode": "full", "decode_chunk_size": 13, "forward_chunking": False, "offload": False},
        "pipeline": {"attention": "AttnProcessor2_0", "channels_last": True, "compiled": False,
                     "peak_gpu_bytes": 21_990_232_555},
        "timings": {"render_s": round(render_s * 0.86, 4), "encode_s": round(render_s * 0.08, 4),
                    "upload_s": round(render_s * 0.06, 4)},
    }
    return result, runtime


class Lease:
    """worker.monitor.LeaseKeeper's loop as a chain: renew_lease every max(0.2, lease_s / 4) after the last renewal
    returned; `lost` once the job is no longer this worker's (the JobMonitor checks it at every step)."""

    def __init__(self, ctx: WorkerContext, job_id: str, samples: Samples) -> None:
        self.ctx, self.job_id, self.samples = ctx, job_id, samples
        self.every = max(0.2, ctx.settings.lease_s / 4)
        self.lost = False
        self.stopped = False

    def act(self) -> float | None:
        if self.stopped:
            return None
        t0 = time.perf_counter()
        try:
            with session_scope(self.ctx.sessions) as s:
                kept = renew_lease(s, job_id=self.job_id, worker=self.ctx.name, lease_s=self.ctx.settings.lease_s)
        except Exception as exc:  # noqa: BLE001 - as LeaseKeeper: the database blinked, the lease has slack
            log.warning("lease renewal for %s failed: %s", self.job_id, exc)
            kept = True
        self.samples.since("renew", t0)
        if not kept:
            self.lost = True
            return None
        return time.monotonic() + self.every


class SimWorker:
    """One worker's main chain: idle until the fleet hands it a message, then claim, steps, finish, release."""

    def __init__(self, base: WorkerContext, index: int, *, samples: Samples, render_s: float, schedule: Schedule,
                 release: Callable[[SimWorker, Message], None]) -> None:
        name = worker_name(MODEL, "cuda:0", str(index % 8), 100_000 + index, f"fleet-node-{index // 8:04d}")
        self.ctx = dataclasses.replace(base, name=name)
        self.heartbeat = Heartbeat(base.signals.redis, MODEL, name, self.ctx.presence())
        self.samples, self.render_s, self.schedule, self.release = samples, render_s, schedule, release
        self.beating = True
        self._reset()

    def _reset(self) -> None:
        self.job_id: str | None = None
        self.message: Message | None = None
        self.job: Job | None = None
        self.monitor: JobMonitor | None = None
        self.lease: Lease | None = None
        self.observer: RenderObserver | None = None
        self.step_no = self.steps = 0

    def assign(self, job_id: str, message: Message) -> None:
        self.job_id, self.message = job_id, message

    def beat(self) -> float | None:
        if not self.beating:
            return None
        self.heartbeat.beat()
        return time.monotonic() + EVERY_S

    def act(self) -> float | None:
        try:
            if self.job is None:
                return self._claim()
            return self._step()
        except JobStop as stop:  # the lease was taken (or the job canceled): what run_render does with it aside
            self.samples.count(f"stopped_{stop.code}")
            return self._done(LOST)

    def _checkpoint(self, stage: str, step: int, *, as_step: bool = False) -> None:
        monitor = self.monitor
        assert monitor is not None
        before = monitor.last_write
        t0 = time.perf_counter()
        if as_step:
            monitor.step(step, self.steps)
        else:
            monitor.checkpoint(stage, step, self.steps)
        self.samples.since("progress", t0)
        if monitor.last_write != before:
            self.samples.count("progress_writes")

    def _claim(self) -> float | None:
        assert self.job_id is not None
        observer = RenderObserver(self.ctx.metrics, self.job_id, cuda=False, sessions=self.ctx.sessions,
                                  redis=self.ctx.signals.redis)
        self.observer = observer.__enter__()
        t0 = time.perf_counter()
        claimed, job = _claim(self.ctx, self.job_id)
        self.samples.since("claim", t0)
        if job is None or not claimed:
            self.samples.count("claims_skipped")
            return self._done(MISSING if job is None else RenderOutcome("skipped", status=job.status))
        self.ctx.signals.dequeued(job.model, job.id)
        self.job = job
        self.lease = Lease(self.ctx, job.id, self.samples)
        self.schedule(time.monotonic() + self.lease.every, self.lease.act)
        # a LeaseKeeper in all but type: JobMonitor reads only its `lost`
        self.monitor = JobMonitor(self.ctx, job.id, self.lease)  # type: ignore[arg-type]
        self.steps = int(job.params["num_inference_steps"])
        self._checkpoint("denoising", 0)
        return time.monotonic() + self.render_s / self.steps

    def _step(self) -> float | None:
        self.step_no += 1
        self._checkpoint("denoising", self.step_no, as_step=True)
        if self.step_no < self.steps:
            return time.monotonic() + self.render_s / self.steps
        return self._finish()

    def _finish(self) -> float | None:
        job, lease = self.job, self.lease
        assert job is not None and lease is not None
        self._checkpoint("encoding", self.steps)
        self._checkpoint("uploading", self.steps)
        result, runtime = render_record(self.ctx, job, self.render_s)
        t0 = time.perf_counter()
        finished = _retry_db(self.ctx, lambda s: finish_job(s, job_id=job.id, worker=self.ctx.name, result=result,
                                                            runtime=runtime))
        self.samples.since("finish", t0)
        lease.stopped = True
        if not finished:
            self.samples.count("finish_lost")
            return self._done(LOST)
        self.ctx.jobs_done += 1
        t0 = time.perf_counter()
        with session_scope(self.ctx.sessions) as s:
            lifecycle.job_ended(s, job.id, self.ctx.fx)
        self.samples.since("job_ended", t0)
        self.samples.count("jobs_finished")
        return self._done(SUCCEEDED)

    def _done(self, outcome: RenderOutcome) -> float | None:
        """The job's end: its observer closed, the message released; the main chain waits for the next one."""
        observer, message = self.observer, self.message
        if observer is not None:
            observer.outcome = outcome
            observer.__exit__(None, None, None)
        if self.lease is not None:
            self.lease.stopped = True
        self._reset()
        assert message is not None
        self.release(self, message)  # acknowledged (acks_late), then the next message, if one waits
        return None
