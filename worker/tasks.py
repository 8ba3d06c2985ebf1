"""Celery task bindings. The message carries a job id and nothing else; the row holds the rest."""

from __future__ import annotations

import logging

from celery import Celery
from celery.exceptions import Reject

from models.queue import GRID_TASK, RENDER_TASK, make_enqueue, make_grid_enqueue
from worker.context import WorkerContext
from worker.metrics import RenderObserver, bind_job_logging
from worker.render import ClaimDeferred, run_render

log = logging.getLogger("svdq.worker")


def register_tasks(app: Celery, ctx: WorkerContext) -> None:
    ctx.enqueue = make_enqueue(app)
    ctx.enqueue_grid = make_grid_enqueue(app)
    bind_job_logging()

    @app.task(name=GRID_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def grid(sweep_id: str, image_id: str) -> str:
        from worker.sweep_grid import run_grid

        return run_grid(ctx, sweep_id, image_id)

    @app.task(name=RENDER_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def render(job_id: str) -> str:
        try:
            with RenderObserver(ctx, job_id) as observed:
                observed.outcome = run_render(ctx, job_id)
        except ClaimDeferred as exc:
            log.warning("%s; the message goes back on the queue", exc, extra={"job_id": job_id})
            raise Reject(str(exc), requeue=True) from exc  # acks_late alone would acknowledge it
        return observed.outcome
