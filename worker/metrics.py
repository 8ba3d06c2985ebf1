"""Worker-side observability: the worker's own Prometheus exporter (`svdq worker --metrics-port`), the
job-time histograms it feeds for the API (the shared counters are models/job_times.py), and job ids on the
Celery task's log lines. Importing this module never imports torch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from celery.signals import task_postrun, task_prerun
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from models.db import session_scope
from models.job_times import QUEUE_WAIT, RENDER, record_job_times
from models.logs import current_job_id
from models.queue import RENDER_TASK
from models.tables import Job

if TYPE_CHECKING:
    from worker.context import WorkerContext

log = logging.getLogger("svdq.worker.metrics")

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
TERMINAL_OUTCOMES = ("succeeded", "failed", "canceled")


class WorkerMetrics:
    """This process's metrics, in a registry of its own (one per worker context, no global state)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        r = self.registry
        self.renders = Counter("svdq_worker_renders", "Jobs this worker claimed and rendered to an end, "
                               "whatever the outcome", ["model"], registry=r)
        self.failures = Counter("svdq_worker_failures", "Renders that failed (or failed for now and were "
                                "requeued), by error code", ["model", "code"], registry=r)
        self.step_seconds = Histogram("svdq_worker_step_seconds", "Wall time of one denoising step",
                                      ["model"], buckets=STEP_BUCKETS, registry=r)
        self.peak_gpu = Gauge("svdq_worker_peak_gpu_memory_bytes", "Peak GPU memory allocated during the "
                              "last render (0 on CPU)", ["model"], registry=r)
        self.load_seconds = Gauge("svdq_worker_model_load_seconds", "How long the pipeline took to load",
                                  ["model"], registry=r)
        self.busy = Gauge("svdq_worker_busy", "1 while this worker renders a job", ["model"], registry=r)
        for gauge in (self.peak_gpu, self.load_seconds, self.busy):
            gauge.labels(model).set(0)
        self.renders.labels(model)

    def serve(self, port: int, host: str = "0.0.0.0") -> bool:
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            # a second worker on the same machine keeps rendering; only its exporter is off
            log.warning("worker metrics exporter not started on port %d: %s", port, exc)
            return False
        log.info("worker metrics on http://%s:%d/metrics", host, port)
        return True

    def ended(self, outcome: str) -> None:
        head, _, code = outcome.partition(":")
        if head in ("missing", "skipped"):
            return
        self.renders.labels(self.model).inc()
        if head in ("failed", "retrying"):
            self.failures.labels(self.model, code or "unknown").inc()


def start_exporter(ctx: WorkerContext, port: int) -> None:
    """Call after the pipeline loaded. Port 0 turns the exporter (and the in-process metrics) off."""
    if port <= 0:
        return
    metrics = WorkerMetrics(ctx.spec.name)
    metrics.load_seconds.labels(ctx.spec.name).set(ctx.holder.load_seconds)
    metrics.serve(port)
    ctx.metrics = metrics


def timed_steps(ctx: WorkerContext, on_step: Callable[[int, int], None]) -> Callable[[int, int], None]:
    """Wraps the step callback to time each denoising step: from the end of one callback to the start of the
    next, so the callback's own work (progress, cancel checks) is left out. Step 1 also holds the image
    encoding, so it is not counted; an out-of-memory retry starts again at step 1."""
    metrics = ctx.metrics
    if metrics is None:
        return on_step
    child = metrics.step_seconds.labels(ctx.spec.name)
    last: float | None = None

    def step(i: int, total: int) -> None:
        nonlocal last
        if last is not None and i > 1:
            child.observe(time.perf_counter() - last)
        on_step(i, total)
        last = time.perf_counter()

    return step


class RenderObserver:
    """Around one render task: busy gauge and peak GPU memory while it runs; at its end the outcome
    counters and, for a job that reached a final status, its queue-wait and render seconds in Redis."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.outcome = ""
        self.cuda = ctx.holder.device.startswith("cuda")

    def __enter__(self) -> RenderObserver:
        m = self.ctx.metrics
        if m is not None:
            m.busy.labels(m.model).set(1)
            if self.cuda:
                import torch

                torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        m = self.ctx.metrics
        if m is not None:
            m.busy.labels(m.model).set(0)
            peak = 0
            if self.cuda:
                import torch

                peak = int(torch.cuda.max_memory_allocated())
            m.peak_gpu.labels(m.model).set(peak)
            if self.outcome:  # none when run_render raised (a claim deferred through a DB outage): no render
                m.ended(self.outcome)
        if self.outcome.partition(":")[0] in TERMINAL_OUTCOMES:
            self._record_job_times()

    def _record_job_times(self) -> None:
        redis = self.ctx.signals.redis
        if redis is None:
            return
        try:
            with session_scope(self.ctx.sessions) as s:
                job = s.get(Job, self.job_id)
                if job is None or job.started_at is None or job.finished_at is None:
                    return
                model = job.model
                wait = (job.started_at - job.created_at).total_seconds()
                render = (job.finished_at - job.started_at).total_seconds()
            record_job_times(redis, model, {QUEUE_WAIT: max(0.0, wait), RENDER: max(0.0, render)})
        except Exception as exc:  # noqa: BLE001 - metrics must never fail a finished job
            log.warning("job times for %s not recorded: %s", self.job_id, exc)


def _bind_job_id(sender: Any = None, args: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) == RENDER_TASK and args:
        current_job_id.set(str(args[0]))


def _unbind_job_id(**_: Any) -> None:
    current_job_id.set(None)


def bind_job_logging() -> None:
    """Every log line of a render task, Celery's own 'succeeded in' line included, carries its job_id.
    The solo pool runs prerun, the task and postrun in one thread, so a context variable carries it."""
    task_prerun.connect(_bind_job_id, weak=False, dispatch_uid="svdq-bind-job-id")
    task_postrun.connect(_unbind_job_id, weak=False, dispatch_uid="svdq-unbind-job-id")
