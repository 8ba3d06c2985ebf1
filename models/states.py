"""The job state machine. A job row moves only through conditional updates, so two processes that race for the
same transition cannot both win. Every status change goes through `_move`, whose guard is a `Move` the
TRANSITIONS table allows (a move it does not allow cannot even be built); updates that keep a job where it is
(lease, progress, the cancel flag) guard on that status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from models.job_counts import count_finished
from models.status import TERMINAL, JobStatus
from models.tables import Job, utcnow

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


def can_move(src: JobStatus, dst: JobStatus) -> bool:
    return dst in TRANSITIONS[src]


@dataclass(frozen=True)
class Move:
    """One edge of the table: the status an update requires (its guard) and the one it sets."""

    src: JobStatus
    dst: JobStatus

    def __post_init__(self) -> None:
        if not can_move(self.src, self.dst):
            raise ValueError(f"a job cannot move from {self.src} to {self.dst} (models.states.TRANSITIONS)")


CLAIM = Move(JobStatus.QUEUED, JobStatus.RUNNING)
FINISH = Move(JobStatus.RUNNING, JobStatus.SUCCEEDED)
REQUEUE = Move(JobStatus.RUNNING, JobStatus.QUEUED)
CANCEL_QUEUED = Move(JobStatus.QUEUED, JobStatus.CANCELED)
REAP_FAILED = Move(JobStatus.RUNNING, JobStatus.FAILED)


def _move(session: Session, move: Move, job_id: str, *guards: ColumnElement[bool], values: dict[str, Any]) -> bool:
    stmt = update(Job).where(Job.id == job_id, Job.status == move.src, *guards).values(status=move.dst, **values)
    if move.dst not in TERMINAL:
        res = session.execute(stmt)
        session.commit()
        return bool(res.rowcount)  # type: ignore[attr-defined]
    # the winner of the move to a terminal status counts it, in the same transaction (models/job_counts.py)
    model = session.execute(stmt.returning(Job.model)).scalar_one_or_none()
    if model is not None:
        count_finished(session, model=model, status=move.dst, job_id=job_id)
    session.commit()
    return model is not None


def _keep(session: Session, status: JobStatus, job_id: str, *guards: ColumnElement[bool],
          values: dict[str, Any]) -> bool:
    """An update that leaves the job in `status` (and only applies while it is there)."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.status == status, *guards).values(**values))
    session.commit()
    return bool(res.rowcount)  # type: ignore[attr-defined]


def claim_job(session: Session, *, job_id: str, worker: str, lease_s: float) -> bool:
    """queued -> running for this worker; False when someone else got it or it is no longer queued."""
    now = utcnow()
    return _move(session, CLAIM, job_id, values={
        "worker": worker, "started_at": now, "lease_expires_at": now + timedelta(seconds=lease_s),
        "attempts": Job.attempts + 1, "progress_step": 0, "progress_stage": "loading", "error_code": None,
        "error_message": None})


def record_progress(session: Session, *, job_id: str, worker: str, step: int, total: int, stage: str) -> bool:
    """False once the job is no longer this worker's to render, or a cancel was requested: stop then."""
    return _keep(session, JobStatus.RUNNING, job_id, Job.worker == worker, Job.cancel_requested_at.is_(None),
                 values={"progress_step": step, "progress_total": total, "progress_stage": stage})


def request_cancel(session: Session, *, job_id: str) -> str | None:
    """Cancel a job: a queued one ends at once ("canceled"); a running one is flagged for its worker to
    stop at the next step ("requested"); None when it had already finished. A job that went back from running
    to queued between the two updates (handed back, or requeued by the reaper) is tried again, so a cancel is
    never lost to that race."""
    while True:
        now = utcnow()
        if _move(session, CANCEL_QUEUED, job_id, values={
                "error_code": "canceled", "error_message": "Canceled by request before it started.",
                "finished_at": now, "cancel_requested_at": now, "lease_expires_at": None}):
            return "canceled"
        if _keep(session, JobStatus.RUNNING, job_id,
                 values={"cancel_requested_at": func.coalesce(Job.cancel_requested_at, now)}):
            return "requested"
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        if status is None or status in TERMINAL:
            return None


def requeue_job(session: Session, *, job_id: str, worker: str, not_before: datetime, code: str, message: str) -> bool:
    """running -> queued after a transient failure; the error stays visible until the next attempt."""
    return _move(session, REQUEUE, job_id, Job.worker == worker, values={
        "worker": None, "lease_expires_at": None, "not_before": not_before, "error_code": code,
        "error_message": message, "progress_step": 0, "progress_stage": "retrying"})


def finish_job(
    session: Session, *, job_id: str, worker: str, result: dict[str, Any], runtime: dict[str, Any]
) -> bool:
    return _move(session, FINISH, job_id, Job.worker == worker, values={
        "result": result, "runtime": runtime, "finished_at": utcnow(), "lease_expires_at": None,
        "progress_stage": "done"})


def fail_job(
    session: Session, *, job_id: str, worker: str | None, code: str, message: str,
    runtime: dict[str, Any] | None = None, status: JobStatus = JobStatus.FAILED,
) -> bool:
    """running (held by `worker`) or queued (worker None) -> failed/canceled."""
    values: dict[str, Any] = {"error_code": code, "error_message": message, "finished_at": utcnow(),
                              "lease_expires_at": None}
    if runtime is not None:
        values["runtime"] = runtime
    if worker is None:
        return _move(session, Move(JobStatus.QUEUED, status), job_id, values=values)
    return _move(session, Move(JobStatus.RUNNING, status), job_id, Job.worker == worker, values=values)


def renew_lease(session: Session, *, job_id: str, worker: str, lease_s: float) -> bool:
    """Extend this worker's hold on a running job; False once the job is no longer its own."""
    return _keep(session, JobStatus.RUNNING, job_id, Job.worker == worker,
                 values={"lease_expires_at": utcnow() + timedelta(seconds=lease_s)})


def reclaim_expired(session: Session, *, job: Job, max_attempts: int) -> str | None:
    """A running job whose lease ran out (its worker died): back to the queue, or failed `worker_lost`
    after max_attempts. Conditional on the very lease that expired, so a live worker's job is never taken."""
    guards = (Job.worker == job.worker, Job.lease_expires_at == job.lease_expires_at)
    if job.attempts >= max_attempts:
        won = _move(session, REAP_FAILED, job.id, *guards, values={
            "error_code": "worker_lost", "finished_at": utcnow(), "lease_expires_at": None,
            "error_message": f"The worker rendering this job stopped answering on each of {job.attempts} attempts "
                             f"(last: {job.worker}); the job may be crashing workers, so it was not tried again. "
                             "Try fewer frames or a smaller size."})
        return "failed" if won else None
    won = _move(session, REQUEUE, job.id, *guards, values={
        "worker": None, "lease_expires_at": None, "progress_step": 0, "progress_stage": "retrying",
        "error_code": "worker_lost",
        "error_message": f"Worker {job.worker} stopped answering during attempt {job.attempts}; "
                         "the job went back to the queue."})
    return "requeued" if won else None
