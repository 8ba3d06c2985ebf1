"""Worker-side observability: the worker's metrics and their Prometheus exporter (`svdq worker --metrics-port`), the
job-time histograms it feeds for the API (the shared counters are models/job_times.py), and job ids on the
Celery task's log lines. Importing this module never imports torch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from celery.signals import task_postrun, task_prerun
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from sqlalchemy.orm import Session, sessionmaker

from models.db import session_scope
from models.job_times import QUEUE_WAIT, RENDER, record_job_times
from models.logs import current_job_id
from models.queue import RENDER_TASK
from models.tables import Job
from worker.outcomes import RenderOutcome

log = logging.getLogger("svdq.worker.metrics")

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


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

    def ended(self, outcome: RenderOutcome) -> None:
        if not outcome.rendered:
            return
        self.renders.labels(self.model).inc()
        if outcome.failure:
            self.failures.labels(self.model, outcome.code or "unknown").inc()


class MetricsExporter:
    """The worker's Prometheus endpoint, a start/stop service of the worker process. Port 0 turns it off (the
    metrics are still kept in-process); a port another worker on the machine holds leaves this one rendering."""

    name = "metrics exporter"

    def __init__(self, metrics: WorkerMetrics, port: int, host: str = "127.0.0.1") -> None:
        self.metrics, self.port, self.host = metrics, port, host
        self.server: Any = None

    @property
    def serving(self) -> bool:
        return self.server is not None

    def start(self) -> None:
        if self.port <= 0:
            return
        try:
            self.server, _thread = start_http_server(self.port, addr=self.host, registry=self.metrics.registry)
        except OSError as exc:
            log.warning("worker metrics exporter not started on port %d: %s", self.port, exc)
            return
        log.info("worker metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def timed_steps(metrics: WorkerMetrics, on_step: Callable[[int, int], None]) -> Callable[[int, int], None]:
    """Wraps the step callback to time each denoising step: from the end of one callback to the start of the
    next, so the callback's own work (progress, cancel checks) is left out. Step 1 also holds the image
    encoding, so it is not counted; an out-of-memory retry starts again at step 1."""
    child = metrics.step_seconds.labels(metrics.model)
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

    def __init__(self, metrics: WorkerMetrics, job_id: str, *, cuda: bool, sessions: sessionmaker[Session],
                 redis: Any) -> None:
        self.metrics, self.job_id, self.cuda, self.sessions, self.redis = metrics, job_id, cuda, sessions, redis
        self.outcome: RenderOutcome | None = None

    def __enter__(self) -> RenderObserver:
        self.metrics.busy.labels(self.metrics.model).set(1)
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        m = self.metrics
        m.busy.labels(m.model).set(0)
        peak = 0
        if self.cuda:
            import torch

            peak = int(torch.cuda.max_memory_allocated())
        m.peak_gpu.labels(m.model).set(peak)
        if self.outcome is None:  # run_render raised (a claim deferred through a DB outage): no render
            return
        m.ended(self.outcome)
        if self.outcome.final:
            self._record_job_times()

    def _record_job_times(self) -> None:
        if self.redis is None:
            return
        try:
            with session_scope(self.sessions) as s:
                job = s.get(Job, self.job_id)
                if job is None or job.started_at is None or job.finished_at is None:
                    return
                model = job.model
                wait = (job.started_at - job.created_at).total_seconds()
                render = (job.finished_at - job.started_at).total_seconds()
            record_job_times(self.redis, model, {QUEUE_WAIT: max(0.0, wait), RENDER: max(0.0, render)})
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
