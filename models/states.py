"""The job state machine. A job row moves only through conditional updates, so two processes that
race for the same transition cannot both win."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from models.status import JobStatus
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


def claim_job(session: Session, *, job_id: str, worker: str, lease_s: float) -> bool:
    """queued -> running for this worker; False when someone else got it or it is no longer queued."""
    now = utcnow()
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            worker=worker,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=Job.attempts + 1,
            progress_step=0,
            progress_stage="loading",
            error_code=None,
            error_message=None,
        )
    )
    session.commit()
    return bool(res.rowcount)  # type: ignore[attr-defined]


def _move_running(session: Session, *, job_id: str, worker: str, values: dict[str, Any]) -> bool:
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.worker == worker).values(**values)
    )
    session.commit()
    return bool(res.rowcount)  # type: ignore[attr-defined]


def record_progress(session: Session, *, job_id: str, worker: str, step: int, total: int, stage: str) -> bool:
    """False once the job is no longer this worker's to render, or a cancel was requested: stop then."""
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.worker == worker,
               Job.cancel_requested_at.is_(None))
        .values(progress_step=step, progress_total=total, progress_stage=stage)
    )
    session.commit()
    return bool(res.rowcount)  # type: ignore[attr-defined]


def request_cancel(session: Session, *, job_id: str) -> str | None:
    """Cancel a job: a queued one ends at once ("canceled"); a running one is flagged for its worker to
    stop at the next step ("requested"); None when it had already finished."""
    now = utcnow()
    values: dict[str, Any] = {"status": JobStatus.CANCELED, "error_code": "canceled",
                              "error_message": "Canceled by request before it started.", "finished_at": now,
                              "cancel_requested_at": now, "lease_expires_at": None}
    res = session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(**values))
    session.commit()
    if res.rowcount:  # type: ignore[attr-defined]
        return "canceled"
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested_at=func.coalesce(Job.cancel_requested_at, now))
    )
    session.commit()
    return "requested" if res.rowcount else None  # type: ignore[attr-defined]


def requeue_job(session: Session, *, job_id: str, worker: str, not_before: datetime, code: str, message: str) -> bool:
    """running -> queued after a transient failure; the error stays visible until the next attempt."""
    return _move_running(
        session, job_id=job_id, worker=worker,
        values={"status": JobStatus.QUEUED, "worker": None, "lease_expires_at": None, "not_before": not_before,
                "error_code": code, "error_message": message, "progress_step": 0, "progress_stage": "retrying"},
    )


def finish_job(
    session: Session, *, job_id: str, worker: str, result: dict[str, Any], runtime: dict[str, Any]
) -> bool:
    return _move_running(
        session, job_id=job_id, worker=worker,
        values={
            "status": JobStatus.SUCCEEDED, "result": result, "runtime": runtime,
            "finished_at": utcnow(), "lease_expires_at": None, "progress_stage": "done",
        },
    )


def fail_job(
    session: Session, *, job_id: str, worker: str | None, code: str, message: str,
    runtime: dict[str, Any] | None = None, status: JobStatus = JobStatus.FAILED,
) -> bool:
    """running (held by `worker`) or queued (worker None) -> failed/canceled."""
    values: dict[str, Any] = {
        "status": status, "error_code": code, "error_message": message,
        "finished_at": utcnow(), "lease_expires_at": None,
    }
    if runtime is not None:
        values["runtime"] = runtime
    if worker is None:
        res = session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(**values))
        session.commit()
        return bool(res.rowcount)  # type: ignore[attr-defined]
    return _move_running(session, job_id=job_id, worker=worker, values=values)




def renew_lease(session: Session, *, job_id: str, worker: str, lease_s: float) -> bool:
    """Extend this worker's hold on a running job; False once the job is no longer its own."""
    return _move_running(session, job_id=job_id, worker=worker,
                         values={"lease_expires_at": utcnow() + timedelta(seconds=lease_s)})


def reclaim_expired(session: Session, *, job: Job, max_attempts: int) -> str | None:
    """A running job whose lease ran out (its worker died): back to the queue, or failed `worker_lost`
    after max_attempts. Conditional on the very lease that expired, so a live worker's job is never taken."""
    guard = (Job.id == job.id, Job.status == JobStatus.RUNNING, Job.worker == job.worker,
             Job.lease_expires_at == job.lease_expires_at)
    if job.attempts >= max_attempts:
        values: dict[str, Any] = {
            "status": JobStatus.FAILED, "error_code": "worker_lost", "finished_at": utcnow(),
            "lease_expires_at": None,
            "error_message": f"The worker rendering this job stopped answering on each of {job.attempts} attempts "
                             f"(last: {job.worker}); the job may be crashing workers, so it was not tried again. "
                             "Try fewer frames or a smaller size.",
        }
        outcome = "failed"
    else:
        values = {"status": JobStatus.QUEUED, "worker": None, "lease_expires_at": None, "progress_step": 0,
                  "progress_stage": "retrying", "error_code": "worker_lost",
                  "error_message": f"Worker {job.worker} stopped answering during attempt {job.attempts}; "
                                   "the job went back to the queue."}
        outcome = "requeued"
    res = session.execute(update(Job).where(*guard).values(**values))
    session.commit()
    return outcome if res.rowcount else None  # type: ignore[attr-defined]
