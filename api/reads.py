"""The hot reads: a job, and a page of jobs (the job list, a sweep's cells, the event stream's re-reads). Each is
one Core select, compiled once, run by the process's reader (api/readers.py: psycopg async on PostgreSQL, no
thread hop); queue positions come from the Redis queue index on the event loop (one pipelined round trip), counted
in SQL only for a job Redis lacks. The database
stays the truth: every read sees the last committed write."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, bindparam, or_, select

from api.errors import ApiError
from api.readers import Query
from api.state import AppState
from models import schemas
from models.events import queue_key
from models.status import JobStatus
from models.tables import ApiKey, Job, UTCDateTime
from models.views import AHEAD_OF, ahead_params, job_view

JOBS = Job.__table__


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


_JOB = Query(select(JOBS).where(JOBS.c.id == bindparam("job_id")))
_AHEAD = Query(AHEAD_OF)


@functools.cache
def _page_query(*, owner: bool, status: bool, sweep: bool, after: bool) -> Query:
    """One query per combination of filters (16 at most), each compiled once."""
    q = select(JOBS)
    if owner:
        q = q.where(JOBS.c.owner_id == bindparam("owner_id"))
    if status:
        q = q.where(JOBS.c.status == bindparam("status"))
    if sweep:
        q = q.where(JOBS.c.sweep_id == bindparam("sweep_id"))
    if after:
        created = bindparam("after_created", type_=UTCDateTime)
        q = q.where(or_(JOBS.c.created_at < created,
                        and_(JOBS.c.created_at == created, JOBS.c.id < bindparam("after_id"))))
    return Query(q.order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc()).limit(bindparam("limit", type_=Integer)))


async def positions(state: AppState, rows: list[Any]) -> dict[str, int]:
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
    for row in missing:
        found[row.id] = int((await state.reads.rows(_AHEAD, ahead_params(row)))[0][0] or 0)
    return found


async def read_job(state: AppState, key: ApiKey, job_id: str, base_url: str) -> schemas.Job:
    found = await state.reads.rows(_JOB, {"job_id": job_id})
    row = found[0] if found else None
    if row is None or (row.owner_id != key.id and not key.is_admin):
        raise ApiError(404, "not_found", f"No job {job_id!r}.")
    where = await positions(state, [row])
    return job_view(row, store=state.store, base_url=base_url, position=where.get(row.id))


async def read_jobs_page(state: AppState, key: ApiKey, *, status: str | None, sweep_id: str | None, limit: int,
                         cursor: str | None, base_url: str) -> schemas.Page[schemas.Job]:
    after = decode_cursor(cursor) if cursor else None
    owner = None if key.is_admin else key.id
    query = _page_query(owner=owner is not None, status=status is not None, sweep=sweep_id is not None,
                        after=after is not None)
    params: dict[str, Any] = {"owner_id": owner, "status": status, "sweep_id": sweep_id, "limit": limit + 1}
    if after is not None:
        params["after_created"], params["after_id"] = after
    rows = await state.reads.rows(query, {k: v for k, v in params.items() if v is not None})
    more = len(rows) > limit
    rows = rows[:limit]
    where = await positions(state, rows)
    return schemas.Page[schemas.Job](
        items=[job_view(row, store=state.store, base_url=base_url, position=where.get(row.id)) for row in rows],
        next_cursor=encode_cursor(rows[-1]) if more and rows else None)
