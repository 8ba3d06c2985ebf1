"""The retention part of the maintenance pass (the rules are models/retention.py's): expired idempotency keys are
deleted, and the stored objects of results and sweep grids whose retention ran out are deleted and their rows
marked. Each step takes a bounded batch, oldest first, from an index range, so a pass costs the same however
large the tables grow; what is left waits for the next pass.

A job's objects are deleted first and its row marked after, so a pass that dies between the two leaves a row
the next pass finds again (deleting a missing object is no error), never an object nobody points at."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, literal, or_, select, tuple_, update
from sqlalchemy.orm import Session

from models.retention import cutoff
from models.status import OPEN, JobStatus
from models.storage import LocalStore, S3Store
from models.tables import IdempotencyKey, Job, SweepGrid, utcnow

log = logging.getLogger("svdq.retention")

KEYS_BATCH = 1000
RESULTS_BATCH = 200  # jobs per pass: two objects each, one DeleteObjects request
GRIDS_BATCH = 100
BUSY_GRIDS = ("pending", "composing")  # a grid still to compose reads its cells' videos

JOBS: Table = Job.__table__  # type: ignore[assignment]
GRIDS: Table = SweepGrid.__table__  # type: ignore[assignment]
OPEN_STATUSES = sorted(s.value for s in OPEN)


def expire_idempotency_keys(session: Session, *, retention_s: float, batch: int = KEYS_BATCH) -> int:
    """Keys older than the retention: a retry with one of them now makes a new job."""
    before = cutoff(retention_s)
    if before is None:
        return 0
    keys = session.execute(select(IdempotencyKey.owner_id, IdempotencyKey.key)
                           .where(IdempotencyKey.created_at < before)
                           .order_by(IdempotencyKey.created_at).limit(batch)).all()
    if not keys:
        session.rollback()
        return 0
    res = session.execute(delete(IdempotencyKey).where(
        tuple_(IdempotencyKey.owner_id, IdempotencyKey.key).in_([tuple(k) for k in keys]),
        IdempotencyKey.created_at < before))
    session.commit()
    return int(res.rowcount)  # type: ignore[attr-defined]


def _any(*where: ColumnElement[bool]) -> ColumnElement[bool]:
    """EXISTS over correlated rows, kept a per-row probe of an index: OFFSET 0 stops PostgreSQL from turning it into
    an anti-join that hashes every recent job on each pass (what the pass reads must not grow with the table)."""
    return select(literal(1)).where(*where).offset(0).exists()


def _sweep_busy(sweep_id: ColumnElement[Any], before: datetime) -> ColumnElement[bool]:
    """The sweep has a cell open or ended after `before`, or a grid still to compose."""
    cell, grid = JOBS.alias("cell"), GRIDS.alias("busy_grid")
    return or_(
        _any(cell.c.sweep_id == sweep_id, or_(cell.c.status.in_(OPEN_STATUSES), cell.c.finished_at.is_(None),
                                              cell.c.finished_at >= before)),
        _any(grid.c.sweep_id == sweep_id, grid.c.status.in_(BUSY_GRIDS)))


def _needed(job: Any, before: datetime) -> ColumnElement[bool]:
    """Something recent still reads this job's result: the job is in a busy sweep."""
    return and_(job.c.sweep_id.is_not(None), _sweep_busy(job.c.sweep_id, before))


def expirable_results(session: Session, *, before: datetime, limit: int) -> list[Any]:
    """Succeeded jobs (the ones that rendered, not those that reused a result) that ended before `before`, whose
    result is still stored and that nothing recent needs: no job that reused the result ended after `before`
    (or is in a busy sweep), and the job is not in a busy sweep itself."""
    src, reuser = JOBS.alias("src"), JOBS.alias("reuser")
    recent_reuse = _any(reuser.c.reused_from == src.c.id,
                        or_(reuser.c.finished_at.is_(None), reuser.c.finished_at >= before, _needed(reuser, before)))
    return list(session.execute(
        select(src.c.id, src.c.result)
        .where(src.c.status == JobStatus.SUCCEEDED.value, src.c.result_expired_at.is_(None),
               src.c.finished_at < before, src.c.reused_from.is_(None), ~recent_reuse, ~_needed(src, before))
        .order_by(src.c.finished_at).limit(limit)).all())


def expire_results(session: Session, store: LocalStore | S3Store, *, retention_s: float,
                   batch: int = RESULTS_BATCH) -> int:
    """Deletes the video and poster of each expirable result, then marks the job and every job that reused it."""
    before = cutoff(retention_s)
    if before is None:
        return 0
    rows = expirable_results(session, before=before, limit=batch)
    session.rollback()  # no transaction held open across the storage calls
    if not rows:
        return 0
    store.delete_many([r.result[k] for r in rows for k in ("video_key", "poster_key") if (r.result or {}).get(k)])
    ids = [r.id for r in rows]
    session.execute(update(Job).where(or_(Job.id.in_(ids), Job.reused_from.in_(ids)), Job.result_expired_at.is_(None))
                    .values(result_expired_at=utcnow()))
    session.commit()
    log.info("retention: deleted the results of %d jobs that ended before %s", len(ids), before.isoformat())
    return len(ids)


def expire_grids(session: Session, store: LocalStore | S3Store, *, retention_s: float,
                 batch: int = GRIDS_BATCH) -> int:
    """Composed grids older than the retention, of sweeps with nothing recent: objects deleted, status expired."""
    before = cutoff(retention_s)
    if before is None:
        return 0
    g = GRIDS.alias("g")
    rows = session.execute(select(g.c.sweep_id, g.c.image_id, g.c.video_key, g.c.poster_key)
                           .where(g.c.status == "done", g.c.updated_at < before, ~_sweep_busy(g.c.sweep_id, before))
                           .order_by(g.c.updated_at).limit(batch)).all()
    session.rollback()
    if not rows:
        return 0
    store.delete_many([k for r in rows for k in (r.video_key, r.poster_key) if k])
    for r in rows:
        session.execute(update(SweepGrid).where(SweepGrid.sweep_id == r.sweep_id, SweepGrid.image_id == r.image_id,
                                                SweepGrid.status == "done")
                        .values(status="expired", updated_at=utcnow()))
    session.commit()
    log.info("retention: deleted %d sweep grids composed before %s", len(rows), before.isoformat())
    return len(rows)
