"""The hot reads: a job, and a page of jobs (the job list, a sweep's cells, the event stream's re-reads). Each is
one thread hop holding one pooled connection for one Core select; queue positions come from the Redis queue
index on the event loop (one pipelined round trip), counted in SQL only for a job Redis lacks. The database
stays the truth: every read sees the last committed write."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, Row, and_, or_, select
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.state import AppState
from models import schemas
from models.events import queue_key
from models.status import JobStatus
from models.tables import ApiKey, Job
from models.views import job_view, sql_position

JOBS = Job.__table__
T = TypeVar("T")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# `<created_at in microseconds since the epoch>.<job id>`: every string of this shape is a place in the newest-first
# order (the OpenAPI document publishes the pattern), so a cursor is either refused by its shape or served
CURSOR_PATTERN = r"^[0-9]{1,17}\.job_[0-9A-Za-z_]{1,64}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(job: Any) -> str:
    return f"{(job.created_at - EPOCH) // timedelta(microseconds=1)}.{job.id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not _CURSOR.match(cursor):
        raise ApiError(422, "invalid_request", "The cursor is not one this API gave out; start without it.")
    micros, job_id = cursor.split(".", 1)
    return EPOCH + timedelta(microseconds=int(micros)), job_id


def _retried(read: Callable[[Engine], T], engine: Engine) -> T:
    """`read` on a pooled connection; once more on a new one when the database had dropped the first (the read
    engine does not ping at checkout; a disconnect invalidates the whole pool, so the retry connects afresh)."""
    try:
        return read(engine)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return read(engine)


def _job_row(engine: Engine, job_id: str) -> Row[Any] | None:
    with engine.connect() as conn:
        return conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()


def _page_rows(engine: Engine, *, owner_id: str | None, status: str | None, sweep_id: str | None, limit: int,
               after: tuple[datetime, str] | None) -> list[Row[Any]]:
    q = select(JOBS)
    if owner_id is not None:
        q = q.where(JOBS.c.owner_id == owner_id)
    if status is not None:
        q = q.where(JOBS.c.status == status)
    if sweep_id is not None:
        q = q.where(JOBS.c.sweep_id == sweep_id)
    if after is not None:
        created, job_id = after
        q = q.where(or_(JOBS.c.created_at < created, and_(JOBS.c.created_at == created, JOBS.c.id < job_id)))
    with engine.connect() as conn:
        return list(conn.execute(q.order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc()).limit(limit + 1)))


def _sql_positions(engine: Engine, rows: list[Row[Any]]) -> dict[str, int]:
    with engine.connect() as conn:
        return {row.id: sql_position(conn, row) for row in rows}


async def positions(state: AppState, rows: list[Row[Any]]) -> dict[str, int]:
    """Queue positions of the queued ones among `rows`, by job id."""
    queued = [row for row in rows if row.status == JobStatus.QUEUED]
    if not queued:
        return {}
    ranks: list[Any] = [None] * len(queued)
    try:
        if len(queued) == 1:  # a single read skips the pipeline's own cost
            ranks = [await state.aredis.zrank(queue_key(queued[0].model), queued[0].id)]
        else:
            pipe = state.aredis.pipeline(transaction=False)
            for row in queued:
                pipe.zrank(queue_key(row.model), row.id)
            ranks = await pipe.execute()
    except Exception:  # noqa: BLE001,S110 - Redis away: every position is counted in SQL below
        pass
    found = {row.id: int(rank) for row, rank in zip(queued, ranks, strict=True) if rank is not None}
    missing = [row for row in queued if row.id not in found]
    if missing:
        found.update(await run_in_threadpool(_retried, lambda engine: _sql_positions(engine, missing), state.reads))
    return found


async def read_job(state: AppState, key: ApiKey, job_id: str, base_url: str) -> schemas.Job:
    row = await run_in_threadpool(_retried, lambda engine: _job_row(engine, job_id), state.reads)
    if row is None or (row.owner_id != key.id and not key.is_admin):
        raise ApiError(404, "not_found", f"No job {job_id!r}.")
    where = await positions(state, [row])
    return job_view(row, store=state.store, base_url=base_url, position=where.get(row.id))


async def read_jobs_page(state: AppState, key: ApiKey, *, status: str | None, sweep_id: str | None, limit: int,
                         cursor: str | None, base_url: str) -> schemas.Page[schemas.Job]:
    after = decode_cursor(cursor) if cursor else None
    owner = None if key.is_admin else key.id
    rows = await run_in_threadpool(_retried, lambda engine: _page_rows(
        engine, owner_id=owner, status=status, sweep_id=sweep_id, limit=limit, after=after), state.reads)
    more = len(rows) > limit
    rows = rows[:limit]
    where = await positions(state, rows)
    return schemas.Page[schemas.Job](
        items=[job_view(row, store=state.store, base_url=base_url, position=where.get(row.id)) for row in rows],
        next_cursor=encode_cursor(rows[-1]) if more and rows else None)
