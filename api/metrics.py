"""`GET /metrics` (Prometheus text, no auth, not in the OpenAPI schema) and the request middleware.

A scrape reads the shared state fresh: finished-job counters and the queued and running jobs by model
(the database, without scanning the jobs table: models/job_counts.py), queue depth per model queue and ready
workers (Redis), and the job-time histograms the workers keep in Redis (see models/job_times.py for why they
live there). Request latency is this replica's own, in its own registry.
A family whose source is down is left out of the scrape (logged once per outage), never a 500."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.state import AppState
from models.job_counts import finished_totals, open_counts
from models.job_times import JOB_BUCKETS, QUEUE_WAIT, RENDER, cumulative, job_histogram_key
from models.logs import current_request
from models.queue import broker_lists, queue_name
from models.registry import REGISTRY
from models.status import TERMINAL, JobStatus

log = logging.getLogger("svdq.api.metrics")

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_HISTOGRAMS = {
    QUEUE_WAIT: ("svdq_job_queue_wait_seconds", "From submit to the start of the job's last attempt"),
    RENDER: ("svdq_job_render_seconds", "From a job's last start to its end (render, encode, upload)"),
}


class ServiceCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.failing: set[str] = set()  # families whose source is down: logged once, until it answers again

    def describe(self) -> Iterable[Metric]:
        return []  # no scrape at registration: the sources may not be up yet

    def collect(self) -> Iterator[Metric]:
        yield from self._guarded("jobs", self._jobs)
        redis_up = True
        for name, family in (("queue_depth", self._queue_depth), ("workers_ready", self._workers_ready),
                             ("job_histograms", self._job_histograms)):
            if not redis_up:  # one timeout per scrape is enough when Redis is away
                break
            metrics = self._guarded(name, family)
            redis_up = bool(metrics)
            yield from metrics

    def _guarded(self, name: str, family: Any) -> list[Metric]:
        try:
            metrics: list[Metric] = list(family())
        except Exception as exc:  # noqa: BLE001 - a source outage drops its families, not the scrape
            if name not in self.failing:
                self.failing.add(name)
                log.warning("metrics: %s left out of scrapes while its source fails: %s", name,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            return []
        if name in self.failing:
            self.failing.discard(name)
            log.info("metrics: %s is back", name)
        return metrics

    def _models(self, seen: Iterable[str] = ()) -> list[str]:
        return sorted(set(REGISTRY) | set(seen))

    def _jobs(self) -> Iterator[Metric]:
        # two small reads, neither over the whole jobs table (models/job_counts.py says why each is correct)
        with self.state.sessions() as session:
            finished, open_now = finished_totals(session), open_counts(session)
        c = CounterMetricFamily("svdq_jobs_finished", "Jobs that ended, by model and terminal status",
                                labels=["model", "status"])
        # every series of every model, zeros included, so none appears only once its first job moves
        for model in self._models(m for m, _ in finished):
            for status in sorted(TERMINAL):
                c.add_metric([model, status.value], finished.get((model, status.value), 0))
        yield c
        for status in (JobStatus.QUEUED, JobStatus.RUNNING):
            g = GaugeMetricFamily(f"svdq_jobs_{status.value}", f"Jobs {status.value} now, by model",
                                  labels=["model"])
            for model in self._models(m for m, _ in open_now):
                g.add_metric([model], open_now.get((model, status.value), 0))
            yield g

    def _queue_depth(self) -> Iterator[Metric]:
        models = self._models()
        lists = [broker_lists(self.state.celery, m) for m in models]
        pipe = self.state.redis.pipeline(transaction=False)
        for names in lists:
            for name in names:
                pipe.llen(name)
        sizes = iter(pipe.execute())
        g = GaugeMetricFamily("svdq_queue_depth", "Messages waiting in each model's Celery queue", labels=["queue"])
        for model, names in zip(models, lists, strict=True):
            g.add_metric([queue_name(model)], sum(int(next(sizes)) for _ in names))
        yield g

    def _workers_ready(self) -> Iterator[Metric]:
        # one SCAN over the presence keys (svdq:workers:<model>:<worker>, models/presence.py); a key
        # exists only while its worker has the pipeline loaded and beats
        ready: dict[str, int] = {}
        for key in self.state.redis.scan_iter(match="svdq:workers:*", count=1000):
            parts = (key.decode() if isinstance(key, bytes) else key).split(":", 3)
            if len(parts) == 4:
                ready[parts[2]] = ready.get(parts[2], 0) + 1
        g = GaugeMetricFamily("svdq_workers_ready", "Workers with the model loaded and heartbeating",
                              labels=["model"])
        for model in self._models(ready):
            g.add_metric([model], ready.get(model, 0))
        yield g

    def _job_histograms(self) -> Iterator[Metric]:
        pipe = self.state.redis.pipeline(transaction=False)
        for name in JOB_HISTOGRAMS:
            pipe.hgetall(job_histogram_key(name))
        for (name, (metric, doc)), raw in zip(JOB_HISTOGRAMS.items(), pipe.execute(), strict=True):
            h = HistogramMetricFamily(metric, doc, labels=["model"])
            for model, (buckets, total) in sorted(cumulative(raw, JOB_BUCKETS[name]).items()):
                h.add_metric([model], buckets, total)
            yield h


class RequestMetrics:
    """Times every request by method, route template and status, and puts the request in the logging
    context, so lines logged for a route with a `{job_id}` carry that job id."""

    def __init__(self, app: ASGIApp, *, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = current_request.set(scope)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, observing_send)
        finally:
            # routing leaves the matched route in the scope; never the raw path as a label, or unknown
            # URLs would grow series without bound
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.histogram.labels(scope.get("method", ""), route, str(status)).observe(time.perf_counter() - started)
            current_request.reset(token)


def install_metrics(app: FastAPI, state: AppState) -> None:
    """Adds GET /metrics and the request middleware; call after the routers are included."""
    registry = CollectorRegistry()
    http = Histogram("svdq_http_request_duration_seconds", "API request latency (event streams: their "
                     "whole life)", ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=registry)
    registry.register(ServiceCollector(state))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMetrics, histogram=http)
