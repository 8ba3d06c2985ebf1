"""What follows a job's status change, said once for every path that makes it.

- `job_started`: after a worker claimed a job to render it: its `job.started` webhook event recorded when its
  event filter asks for it (and its sweep's `sweep.started`, for the sweep's first cell to start), once however
  often the job is claimed again (a retry, a requeue after a dead lease).
- `job_ended`: after a job reached a terminal status, whichever path got it there (a worker's success or
  failure, the cancel of a queued job or of a sweep, the reaper failing a dead job, a reused result at submit,
  a queue that refused the job): its status event is published, its webhook event recorded when its filter
  asks for `completed` (and its sweep's, once the sweep ended), it leaves the queue index, and the sweep grid
  is requested at once when it was its image's last open cell.
- `send`: a queued job goes into the queue index and its message onto the model's queue (submit, requeue).
- `submitted`: `send` for a new job; when the broker refuses, the job fails `queue_unavailable` (and ends).
- `requeued`: after a running job went back to queued (a transient failure, a worker's shutdown, a dead lease):
  `send` (after `delay_s`) and the status event.
- `cancel`: the cancel request itself, then what follows (a queued job ends now, a running one is flagged).

The transitions themselves are conditional updates (models/states.py); these functions run after one won.
A message a worker could not even claim (database away) goes back to the broker unacknowledged, not through
here: nothing about the job changed (worker/tasks.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from models import sweeps as sw
from models.events import JobSignals, StatusEvent
from models.queue import Enqueue, GridEnqueue
from models.states import fail_job, request_cancel
from models.status import TERMINAL, JobStatus
from models.tables import Job, Sweep
from models.webhooks import record_event, wants

log = logging.getLogger("svdq.lifecycle")


@dataclass(frozen=True)
class Effects:
    """The side channels a lifecycle step uses besides the database: Redis signals and the two message senders."""

    signals: JobSignals
    enqueue: Enqueue
    enqueue_grid: GridEnqueue


def job_started(session: Session, job_id: str) -> None:
    """The `started` webhook events of a job a worker just claimed (see the module's docstring). Recording only:
    the sender delivers them, so a receiver that is down never holds up the render."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return
    if job.webhook_url and wants(job.webhook_events, "started"):
        record_event(session, owner_id=job.owner_id, resource_id=job.id, event="job.started", url=job.webhook_url)
    if job.sweep_id is None:
        return
    sweep = session.get(Sweep, job.sweep_id)
    if sweep is not None and sweep.webhook_url and wants(sweep.webhook_events, "started"):
        record_event(session, owner_id=sweep.owner_id, resource_id=sweep.id, event="sweep.started",
                     url=sweep.webhook_url)


def job_ended(session: Session, job_id: str, fx: Effects) -> None:
    """Everything that follows a terminal status; a job that is not terminal (or not there) is left alone, so a
    second call for the same job only repeats idempotent steps (the webhook event is recorded once)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status not in TERMINAL:
        return
    fx.signals.dequeued(job.model, job.id)
    fx.signals.publish(job.id, StatusEvent(status=JobStatus(job.status)))
    if job.webhook_url and wants(job.webhook_events, "completed"):
        record_event(session, owner_id=job.owner_id, resource_id=job.id, event=f"job.{job.status}",
                     url=job.webhook_url)
    if job.sweep_id is None:
        return
    if sw.image_done(session, job.sweep_id, job.image_id):
        sw.request_grid(session, fx.enqueue_grid, job.sweep_id, job.image_id, job.model)
    sweep = session.get(Sweep, job.sweep_id)
    if sweep is not None and sweep.webhook_url and wants(sweep.webhook_events, "completed"):
        status = sw.status(sweep, sw.counts(session, sweep.id))
        if status in TERMINAL:
            record_event(session, owner_id=sweep.owner_id, resource_id=sweep.id, event=f"sweep.{status}",
                         url=sweep.webhook_url)


def send(job: Job, fx: Effects, delay_s: float = 0.0) -> int | None:
    """Into the queue index (the reconciler's marker, and queue_position), then the message. Returns the job's
    place in the index as it went in (0 = next), or None when Redis did not say."""
    rank = fx.signals.queued(job.model, job.id, job.priority, job.created_at)
    fx.enqueue(job.id, job.model, job.priority, delay_s)
    return rank


@dataclass(frozen=True)
class Sent:
    """What `submitted` did. False when the broker refused the job, which is then failed (`queue_unavailable`);
    `position` is its queue position as it went in, None when Redis did not say (readers then ask again)."""

    ok: bool
    position: int | None = None

    def __bool__(self) -> bool:
        return self.ok


def submitted(session: Session, job: Job, fx: Effects) -> Sent:
    """Send a new queued job (see Sent)."""
    try:
        position = send(job, fx)
    except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the job must not stay queued unsent
        log.error("enqueue of %s failed: %s", job.id, exc, extra={"job_id": job.id})
        if fail_job(session, job_id=job.id, worker=None, code="queue_unavailable",
                    message="The job queue (Redis) did not accept the job; submit it again."):
            job_ended(session, job.id, fx)
        fx.signals.dequeued(job.model, job.id)
        return Sent(ok=False)
    return Sent(ok=True, position=position)


def requeued(job: Job, fx: Effects, delay_s: float = 0.0) -> None:
    """After a running job went back to queued: sent again (no earlier than `delay_s`), and readers told."""
    send(job, fx, delay_s)
    fx.signals.publish(job.id, StatusEvent(status=JobStatus.QUEUED))


def cancel(session: Session, job: Job, fx: Effects) -> str | None:
    """Cancel a job: "canceled" (it was queued: ended now), "requested" (running: its worker stops at the next
    step, told by the row and by a Redis flag) or None (it had already ended)."""
    outcome = request_cancel(session, job_id=job.id)
    if outcome == "requested":
        fx.signals.request_cancel(job.id)
    elif outcome == "canceled":
        job_ended(session, job.id, fx)
    return outcome


def grids_due(session: Session, sweep: Sweep, fx: Effects) -> None:
    """Request every grid of this sweep whose cells have all ended (after a sweep cancel, or a sweep whose cells
    were all reused at submit); the grid task itself makes sure each is composed once."""
    for image_id in sw.pending_grid_images(session, sweep.id):
        if sw.image_done(session, sweep.id, image_id):
            sw.request_grid(session, fx.enqueue_grid, sweep.id, image_id, sweep.model)
