"""Celery task bindings. The message carries a job id and nothing else; the row holds the rest."""

from __future__ import annotations

import logging

from celery import Celery
from celery.exceptions import Reject

from models.queue import GRID_TASK, RENDER_TASK
from worker.context import WorkerContext
from worker.metrics import RenderObserver, bind_job_logging
from worker.render import ClaimDeferred, run_render
from worker.sweep_grid import run_grid

log = logging.getLogger("svdq.worker")


def register_tasks(app: Celery, ctx: WorkerContext) -> None:
    bind_job_logging()

    @app.task(name=GRID_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def grid(sweep_id: str, image_id: str) -> str:
        return run_grid(ctx, sweep_id, image_id)

    @app.task(name=RENDER_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def render(job_id: str) -> str:
        try:
            with RenderObserver(ctx.metrics, job_id, cuda=ctx.holder.cuda, sessions=ctx.sessions,
                                redis=ctx.signals.redis) as observed:
                observed.outcome = run_render(ctx, job_id)
        except ClaimDeferred as exc:
            # nothing about the job changed: the broker keeps the message for another try (acks_late alone
            # would acknowledge it, and the job would stay queued with no message)
            log.warning("%s; the message goes back on the queue", exc, extra={"job_id": job_id})
            raise Reject(str(exc), requeue=True) from exc
        return observed.outcome.label
