"""One render message, from claim to a recorded end: claim the job (through a short database outage), produce
its video (worker/produce.py) under a kept lease, record the result, and let models/lifecycle.py do what follows.
Every failure ends the job with a code and a sentence a person can act on, or puts it back in the queue."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models import lifecycle
from models.db import session_scope
from models.states import claim_job, fail_job, finish_job, requeue_job
from models.tables import Job, utcnow
from worker.context import WorkerContext
from worker.monitor import JobMonitor, LeaseKeeper
from worker.outcomes import (
    HANDED_BACK,
    LOST,
    MISSING,
    SUCCEEDED,
    JobHandBack,
    JobLost,
    JobStop,
    JobTransient,
    RenderOutcome,
)
from worker.produce import produce

log = logging.getLogger("svdq.worker")


class ClaimDeferred(Exception):
    """The database stayed away for db_retry_s while claiming: the message must go back on the queue, not be
    acknowledged, or the job would stay queued with no message for it (and the reconciler would not resend it,
    since its queue index still lists it)."""


def _retry_db(ctx: WorkerContext, write: Callable[[Session], bool]) -> bool:
    delay, deadline = 0.5, time.monotonic() + ctx.settings.db_retry_s
    while True:
        try:
            with session_scope(ctx.sessions) as s:
                return write(s)
        except OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1fs", exc.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _claim(ctx: WorkerContext, job_id: str) -> tuple[bool, Job | None]:
    found: list[tuple[bool, Job | None]] = []

    def claim(s: Session) -> bool:
        found.append((claim_job(s, job_id=job_id, worker=ctx.name, lease_s=ctx.settings.lease_s), s.get(Job, job_id)))
        return True

    try:
        _retry_db(ctx, claim)
    except OperationalError as exc:
        raise ClaimDeferred(f"database unavailable while claiming {job_id}: {exc.orig}") from exc
    return found[-1]


def _started(ctx: WorkerContext, job: Job) -> None:
    """The `started` webhook events (models/lifecycle.py), recorded once for the sender to deliver. Only a job with
    a webhook, or a sweep's cell, can have one; a failure to record is logged and the render goes on."""
    if not (job.webhook_url or job.sweep_id):
        return
    try:
        with session_scope(ctx.sessions) as s:
            lifecycle.job_started(s, job.id)
    except Exception as exc:  # noqa: BLE001 - a webhook never fails a render
        log.warning("job %s: its started webhook event was not recorded: %s", job.id, exc, extra={"job_id": job.id})


def _stopped(ctx: WorkerContext, job: Job, stop: JobStop) -> RenderOutcome:
    """A render that ended early: back to the queue (shutdown, or a transient failure with attempts left), or
    ended failed or canceled. A row that is no longer this worker's is left alone."""
    if isinstance(stop, JobLost):
        log.warning("job %s was taken from this worker; result discarded", job.id)
        return LOST
    with session_scope(ctx.sessions) as s:
        if isinstance(stop, JobHandBack):
            if not requeue_job(s, job_id=job.id, worker=ctx.name, code=stop.code, message=stop.message,
                               not_before=utcnow()):
                return LOST
            lifecycle.requeued(job, ctx.fx)
            log.warning("job %s handed back: %s", job.id, stop.message)
            return HANDED_BACK
        if isinstance(stop, JobTransient) and job.attempts < ctx.settings.max_attempts:
            delay = min(60.0, 2.0 ** job.attempts)
            message = f"{stop.message} Retrying (attempt {job.attempts + 1} of {ctx.settings.max_attempts})."
            if not requeue_job(s, job_id=job.id, worker=ctx.name, code=stop.code, message=message,
                               not_before=utcnow() + timedelta(seconds=delay)):
                return LOST
            lifecycle.requeued(job, ctx.fx, delay)
            log.warning("job %s: %s; back in the queue in %.0fs", job.id, stop.code, delay)
            return RenderOutcome("retrying", code=stop.code)
        runtime = {**ctx.holder.record(), "worker": ctx.name}
        if not fail_job(s, job_id=job.id, worker=ctx.name, code=stop.code, message=stop.message, runtime=runtime,
                        status=stop.status):
            return LOST
        lifecycle.job_ended(s, job.id, ctx.fx)
    log.warning("job %s %s: %s %s", job.id, stop.status, stop.code, stop.message)
    return RenderOutcome("canceled" if stop.status == "canceled" else "failed", code=stop.code)


def run_render(ctx: WorkerContext, job_id: str) -> RenderOutcome:
    """Claim the job and render it; the outcome says what happened (for logs, metrics and Flower)."""
    claimed, job = _claim(ctx, job_id)
    if job is None:
        log.warning("job %s does not exist; message dropped", job_id)
        return MISSING
    if not claimed:
        log.info("job %s is %s; not rendering it", job_id, job.status)
        return RenderOutcome("skipped", status=job.status)
    ctx.signals.dequeued(job.model, job_id)
    log.info("job %s claimed by %s (attempt %d)", job_id, ctx.name, job.attempts)
    _started(ctx, job)
    try:
        with LeaseKeeper(ctx, job_id) as lease:
            result, runtime = produce(ctx, job, JobMonitor(ctx, job_id, lease))
            # the result is stored: keep it through a database outage rather than render again
            finished = _retry_db(ctx, lambda s: finish_job(s, job_id=job_id, worker=ctx.name, result=result,
                                                           runtime=runtime))
    except JobStop as stop:
        return _stopped(ctx, job, stop)
    if not finished:
        log.warning("job %s was taken from this worker before it finished; result discarded", job_id)
        return LOST
    ctx.jobs_done += 1
    with session_scope(ctx.sessions) as s:
        lifecycle.job_ended(s, job_id, ctx.fx)
    log.info("job %s succeeded (%d bytes)", job_id, result["bytes"])
    return SUCCEEDED
