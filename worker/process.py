"""The worker process, built whole here: pin the GPU, set up logging, load the context (worker/context.py), bind
the tasks, start the services (heartbeat, maintenance pass, webhook sender, metrics exporter), consume the
model's queue until a warm shutdown, stop the services in reverse. `svdq worker` parses its arguments and calls
`run_worker`, the way arq's `run_worker(settings)` builds its Worker from on_startup and on_shutdown."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from models.settings import Settings
from models.weights import WeightsError

if TYPE_CHECKING:
    from worker.context import WorkerContext

log = logging.getLogger("svdq.worker")


class Service(Protocol):
    """Something a worker process runs beside its tasks, started before the first message, stopped at shutdown."""

    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


def run_worker(settings: Settings, *, model: str, gpu: str | None = None, metrics_port: int | None = None) -> int:
    """Runs until the worker is stopped (SIGTERM: warm shutdown, the render in flight gets its grace). The worker
    modules are imported here, after the GPU is pinned: nothing may initialise CUDA before that."""
    if gpu is not None:
        # before anything imports torch, so this process sees one GPU only
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if not settings.redis_url:
        raise ValueError("set SVDQ_REDIS_URL (svdq dev sets it for you)")
    from celery.signals import worker_shutting_down

    from models.logs import adopt_library_logs, log_format
    from models.queue import create_celery, queue_name
    from worker.context import WorkerContext
    from worker.tasks import register_tasks

    adopt_library_logs()
    app = create_celery(settings)
    try:
        ctx = WorkerContext.load(settings, model, celery=app, gpu=gpu)
    except WeightsError as exc:  # no weights to load: what to do, in one line, not a traceback
        print(f"svdq worker: {exc.message}", file=sys.stderr, flush=True)
        return 2
    register_tasks(app, ctx)
    services = worker_services(ctx, metrics_port=settings.worker_metrics_port if metrics_port is None
                               else metrics_port)

    def on_shutdown(**_: Any) -> None:
        # Celery's warm shutdown waits for the running task; the render checks this at every step
        ctx.shutdown_requested_at = time.monotonic()

    worker_shutting_down.connect(on_shutdown, weak=False)
    started: list[Service] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        # --quiet (a celery option, before the subcommand): no banner amid JSON lines
        app.worker_main([*(["--quiet"] if log_format() == "json" else []), "worker", "--pool=solo",
                         "--concurrency=1", "-Q", queue_name(model), "-n", ctx.name, "--loglevel=INFO",
                         "--without-mingle", "--without-gossip", "-E"])
    finally:
        for service in reversed(started):
            try:
                service.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others all the same
                log.warning("%s did not stop cleanly: %s", service.name, exc)
    return 0


def worker_services(ctx: WorkerContext, *, metrics_port: int) -> list[Service]:
    """The services of a worker with this context, in start order. The maintenance pass sends from its own thread,
    so it gets its own Celery app (and connections)."""
    import redis

    from models.lifecycle import Effects
    from models.queue import create_celery, make_enqueue, make_grid_enqueue
    from models.views import webhook_payload
    from worker.heartbeat import Heartbeat
    from worker.maintenance import Maintenance
    from worker.metrics import MetricsExporter
    from worker.webhook_sender import WebhookSender

    settings = ctx.settings
    side = create_celery(settings)
    side_fx = Effects(signals=ctx.signals, enqueue=make_enqueue(side), enqueue_grid=make_grid_enqueue(side))
    return [
        MetricsExporter(ctx.metrics, metrics_port, host=settings.metrics_bind_host()),
        Heartbeat(redis.Redis.from_url(settings.redis_url or ""), ctx.spec.name, ctx.name, ctx.presence()),
        Maintenance(sessions=ctx.sessions, fx=side_fx, max_attempts=settings.max_attempts,
                    interval_s=settings.maintenance_interval_s, reconcile_after_s=settings.reconcile_after_s,
                    store=ctx.store, idempotency_retention_s=settings.idempotency_retention_s,
                    result_retention_s=settings.result_retention_s),
        WebhookSender(sessions=ctx.sessions, payload=webhook_payload(ctx.store, settings.public_url),
                      allow_private=settings.allow_private_urls, max_attempts=settings.webhook_max_attempts,
                      base_backoff_s=settings.webhook_backoff_s),
    ]
