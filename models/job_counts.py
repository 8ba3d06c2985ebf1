"""Job counts for `/metrics` that no scrape has to scan the jobs table for.

- Finished jobs (`svdq_jobs_finished_total{model,status}`) are counters: a row per (model, terminal status,
  shard) in `job_counters`, added to in the same transaction as the update that makes a job terminal
  (models/states.py; a job inserted already succeeded, a reused result, counts in its INSERT's transaction).
  The conditional update has one winner, so a job is counted once however many processes race to end it, and a
  crash loses the count only together with the status change. Kept in the database, not in a process or in
  Redis, they are the same from every API replica and survive restarts of the API and of Redis, so Prometheus
  sees a counter that only rises (`rate()` works). Nothing subtracts from them: deleting job rows never makes
  them fall.
- Queued and running jobs (`svdq_jobs_queued`, `svdq_jobs_running`) are gauges counted fresh from the jobs
  table, but only over the open rows: `status IN ('queued', 'running')` is a range of the (status, model) index,
  so a scrape costs what is open now, not every job ever run.

A counter row per shard (picked from the job id) lets concurrent finishers of one model update different rows
instead of waiting on one row lock until each other's commit; the reader sums the shards."""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.status import OPEN
from models.tables import Job, JobCounter

SHARDS = 8

_UPSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def shard_of(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) % SHARDS


def count_finished(session: Session, *, model: str, status: str, job_id: str, n: int = 1) -> None:
    """Add `n` jobs that reached `status` to the counters, inside the caller's transaction (it commits)."""
    dialect = session.get_bind().dialect.name
    insert = _UPSERTS.get(dialect)
    if insert is None:
        raise RuntimeError(f"job counters need PostgreSQL or SQLite, not {dialect}")
    stmt = insert(JobCounter).values(model=model, status=status, shard=shard_of(job_id), n=n)
    session.execute(stmt.on_conflict_do_update(index_elements=["model", "status", "shard"],
                                               set_={"n": JobCounter.n + stmt.excluded.n}))


FINISHED = select(JobCounter.model, JobCounter.status, func.sum(JobCounter.n)).group_by(JobCounter.model,
                                                                                          JobCounter.status)
OPEN_NOW = (select(Job.status, Job.model, func.count()).where(Job.status.in_(sorted(s.value for s in OPEN)))
            .group_by(Job.status, Job.model))


def finished_totals(conn: Session | Connection) -> dict[tuple[str, str], int]:
    """(model, status) -> jobs that ever ended in that status (a few rows per pair, not the jobs table)."""
    return {(model, status): int(n) for model, status, n in conn.execute(FINISHED)}


def open_counts(conn: Session | Connection) -> dict[tuple[str, str], int]:
    """(model, status) -> jobs queued or running now, from an index range over only the open rows."""
    return {(model, status): int(n) for status, model, n in conn.execute(OPEN_NOW)}
