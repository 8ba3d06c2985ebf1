"""The reaper and the reconciler: periodic passes that keep the promise "every accepted job ends in exactly
one terminal state" when workers die or Redis forgets; the same pass enforces retention (worker/retention.py).
Every worker runs them as a start/stop service (worker/process.py); a Redis lock makes one pass run at a time
across the fleet, and every change they make is a conditional update, so a pass that runs twice does no harm.
What follows a reaped job is models/lifecycle.py's."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.events import queue_key, queue_score
from models.lifecycle import Effects, job_ended, requeued
from models.states import reclaim_expired
from models.status import JobStatus
from models.storage import LocalStore, S3Store
from models.sweeps import pending_grids
from models.tables import Job, utcnow
from worker.retention import expire_grids, expire_idempotency_keys, expire_results

log = logging.getLogger("svdq.maintenance")

BATCH = 500


def reap(session: Session, *, fx: Effects, max_attempts: int) -> dict[str, int]:
    """Running jobs with an expired lease go back to the queue (or fail worker_lost past max_attempts)."""
    counts = {"requeued": 0, "failed": 0}
    expired = session.scalars(select(Job).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < utcnow())
                              .limit(BATCH)).all()
    for job in expired:
        holder = job.worker  # the update below clears it on the loaded row
        outcome = reclaim_expired(session, job=job, max_attempts=max_attempts)
        if outcome is None:
            continue  # renewed (or ended) since the list was read
        counts[outcome] += 1
        log.warning("job %s: lease of %s expired; %s", job.id, holder, outcome, extra={"job_id": job.id})
        if outcome == "requeued":
            requeued(job, fx)
        else:
            job_ended(session, job.id, fx)
    return counts


def reconcile(session: Session, *, fx: Effects, older_than_s: float) -> int:
    """Queued jobs that Redis does not know (it restarted empty, or an enqueue was lost) are enqueued again.
    The queue index is the marker: the API adds each job to it just before sending its message. A job
    enqueued twice is harmless: only one worker can claim it."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    queued = session.execute(select(Job.id, Job.model, Job.priority, Job.created_at, Job.not_before)
                             .where(Job.status == JobStatus.QUEUED, Job.created_at < cutoff)
                             .order_by(Job.created_at).limit(20 * BATCH)).all()
    redis: Any = fx.signals.redis
    by_model: dict[str, list[Any]] = {}
    for row in queued:
        by_model.setdefault(row.model, []).append(row)
    sent = 0
    now = utcnow()
    for model, rows in by_model.items():
        scores = redis.zmscore(queue_key(model), [r.id for r in rows])
        for row, score in zip(rows, scores, strict=True):
            # ZADD NX: of two overlapping passes only one re-adds the job, and only that one sends it
            if score is not None or not redis.zadd(queue_key(model), {row.id: queue_score(row.priority,
                                                                                         row.created_at)}, nx=True):
                continue
            if session.scalar(select(Job.status).where(Job.id == row.id)) != JobStatus.QUEUED:
                fx.signals.dequeued(model, row.id)  # claimed (or canceled) since the list was read
                continue
            delay = max(0.0, (row.not_before - now).total_seconds()) if row.not_before else 0.0
            # the ZADD above was the queue-index half of lifecycle.send; this is the message half
            fx.enqueue(row.id, model, row.priority, delay)
            sent += 1
    if sent:
        log.warning("re-enqueued %d queued jobs that Redis did not hold", sent)
    return sent


class Maintenance:
    """Runs reap + reconcile + retention every `interval` seconds in a daemon thread, one pass fleet-wide at a
    time. Retention 0 (a setting's) keeps that kind forever."""

    LOCK = "svdq:maintenance:lock"

    name = "maintenance"

    def __init__(self, *, sessions: sessionmaker[Session], fx: Effects, max_attempts: int, interval_s: float,
                 reconcile_after_s: float, store: LocalStore | S3Store, idempotency_retention_s: float,
                 result_retention_s: float) -> None:
        self.sessions, self.fx, self.store = sessions, fx, store
        self.max_attempts, self.interval, self.reconcile_after = max_attempts, interval_s, reconcile_after_s
        self.idempotency_retention, self.result_retention = idempotency_retention_s, result_retention_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svdq-maintenance", daemon=True)

    def run_once(self) -> dict[str, int]:
        redis: Any = self.fx.signals.redis
        token = uuid.uuid4().hex
        # held for the whole pass (its expiry only guards against a holder that died mid-pass)
        if not redis.set(self.LOCK, token, nx=True, ex=max(60, int(self.interval * 6))):
            return {}
        try:
            with self.sessions() as s:
                counts = reap(s, fx=self.fx, max_attempts=self.max_attempts)
                counts["reenqueued"] = reconcile(s, fx=self.fx, older_than_s=self.reconcile_after)
                counts["grids"] = pending_grids(s, self.fx.enqueue_grid)
                counts["keys_expired"] = expire_idempotency_keys(s, retention_s=self.idempotency_retention)
                counts["results_expired"] = expire_results(s, self.store, retention_s=self.result_retention)
                counts["grids_expired"] = expire_grids(s, self.store, retention_s=self.result_retention)
            return counts
        finally:
            if redis.get(self.LOCK) == token.encode():
                redis.delete(self.LOCK)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the next pass tries again; a worker never dies of this
                log.warning("maintenance pass failed: %s", exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
