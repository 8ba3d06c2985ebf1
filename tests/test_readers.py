"""The hot reads' PostgreSQL reader (psycopg async, no thread hop) against the engine every other path uses: the
same rows, the same Python values; a connection the database dropped is replaced without the caller seeing it; a
read cancelled mid-statement never leaves its connection for the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, timedelta

import pytest
from sqlalchemy import Engine, text

from api.errors import ApiError
from api.readers import PostgresReader, Query, ThreadedReader, open_reader
from api.reads import _AHEAD, _JOB, _page_query
from models.db import create_db_engine, create_session_factory
from models.migrate import upgrade
from models.tables import ApiKey, Image, Job, utcnow
from models.views import ahead_params
from ops.harness.databases import postgres_database


@pytest.fixture(scope="module")
def jobs_db() -> Iterator[tuple[str, Engine, list[Job]]]:
    """A database with one key, one image and five jobs: queued, running with progress, succeeded with a result,
    failed with an error, and a sweep's cell (JSON in every column that holds it, NULLs where it has none)."""
    with postgres_database() as url:
        upgrade(url)
        engine = create_db_engine(url)
        now = utcnow()
        with create_session_factory(engine)() as s:
            s.add(ApiKey(id="key_r", name="r", prefix="svdq_r", key_hash="h", created_at=now))
            s.add(Image(id="img_r", owner_id="key_r", sha256="0" * 64, width=64, height=64, content_type="image/png",
                        bytes=10, storage_key="images/img_r.png", created_at=now))
            base = {"owner_id": "key_r", "model": "svd", "image_id": "img_r", "output": {"format": "mp4"}}
            jobs = [
                Job(id="job_r0", status="queued", params={"seed": 42, "fps": 7}, priority=5, **base,
                    created_at=now - timedelta(seconds=5)),
                Job(id="job_r1", status="running", params={"seed": 1}, priority=9, worker="svd-gpu0@h",
                    progress_step=3, progress_total=25, progress_stage="denoising", attempts=1, **base,
                    created_at=now - timedelta(seconds=4), started_at=now, lease_expires_at=now + timedelta(60)),
                Job(id="job_r2", status="succeeded", params={"seed": 2}, **base, result={"frames": 14, "fps": 7.0},
                    runtime={"device": "cpu", "peak": None}, created_at=now - timedelta(seconds=3), finished_at=now),
                Job(id="job_r3", status="failed", params={}, error_code="render_failed", error_message="é ✓",
                    **base, created_at=now - timedelta(seconds=2)),
                Job(id="job_r4", status="queued", params={"seed": 4}, sweep_id="swp_r", priority=5,
                    sweep_cell={"motion_bucket_id": 180}, sweep_index=0, postprocess={"steps": []}, **base,
                    created_at=now - timedelta(seconds=1)),
            ]
            s.add_all(jobs)
            s.commit()
        yield url, engine, jobs
        engine.dispose()


def both(url: str, engine: Engine, query: Query, params: dict[str, object]) -> tuple[list[tuple], list[tuple]]:  # type: ignore[type-arg]
    async def run() -> tuple[list[tuple], list[tuple]]:  # type: ignore[type-arg]
        reader = open_reader(url)
        assert isinstance(reader, PostgresReader)
        try:
            fast = await reader.rows(query, params)
        finally:
            await reader.close()
        slow = await ThreadedReader(engine).rows(query, params)
        assert all(f._fields == tuple(s._fields) for f, s in zip(fast, slow, strict=True))
        return [tuple(r) for r in fast], [tuple(r) for r in slow]

    return asyncio.run(run())


def test_the_async_reader_answers_the_rows_the_engine_does(jobs_db: tuple[str, Engine, list[Job]]) -> None:
    url, engine, jobs = jobs_db
    for job_id in ("job_r0", "job_r1", "job_r2", "job_r3", "job_r4", "job_none"):
        fast, slow = both(url, engine, _JOB, {"job_id": job_id})
        assert fast == slow and len(fast) == (0 if job_id == "job_none" else 1)
    (row,) = both(url, engine, _JOB, {"job_id": "job_r1"})[0]
    # timestamps come back aware, in UTC; JSON columns come back decoded; NULLs as None
    started = row[[c.name for c in Job.__table__.columns].index("started_at")]
    assert started.tzinfo is not None and started.utcoffset() == timedelta(0) and started.tzinfo == UTC
    # a page: every filter and the cursor, newest first
    q = _page_query(owner=True, status=True, sweep=False, after=True)
    fast, slow = both(url, engine, q, {"owner_id": "key_r", "status": "queued", "limit": 10,
                                       "after_created": jobs[4].created_at, "after_id": "job_r4"})
    assert fast == slow and [r[0] for r in fast] == ["job_r0"]
    q = _page_query(owner=False, status=False, sweep=True, after=False)
    assert both(url, engine, q, {"sweep_id": "swp_r", "limit": 10})[0][0][0] == "job_r4"
    fast, slow = both(url, engine, _page_query(owner=False, status=False, sweep=False, after=False), {"limit": 3})
    assert fast == slow and [r[0] for r in fast] == ["job_r4", "job_r3", "job_r2"]
    # the count of jobs ahead of a queued one
    fast, slow = both(url, engine, _AHEAD, ahead_params(jobs[4]))
    assert fast == slow == [(1,)]


def test_a_connection_the_database_dropped_is_replaced_unseen(jobs_db: tuple[str, Engine, list[Job]]) -> None:
    url, engine, _ = jobs_db

    async def run() -> None:
        reader = PostgresReader(open_reader(url).conninfo)  # type: ignore[attr-defined]
        try:
            assert len(await reader.rows(_JOB, {"job_id": "job_r0"})) == 1
            assert len(reader._idle) == 1
            # When the database ends every session the reader holds (a restart, an idle timeout)
            with engine.connect() as admin:
                ended = admin.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
            assert ended and ended >= 1
            # Then the next read still answers, on a new connection
            assert len(await reader.rows(_JOB, {"job_id": "job_r0"})) == 1
            assert len(reader._idle) == 1 and not reader._idle[0].broken
        finally:
            await reader.close()

    asyncio.run(run())


def test_a_read_cancelled_mid_statement_never_hands_its_connection_on(
        jobs_db: tuple[str, Engine, list[Job]]) -> None:
    url, _, _ = jobs_db
    slow = Query.__new__(Query)  # a statement that takes a second, then answers a job row's shape
    slow.stmt, slow.pg_defaults = None, {}  # type: ignore[assignment]
    slow.pg_sql = "SELECT pg_sleep(1), * FROM jobs WHERE id = %(job_id)s"

    async def run() -> None:
        reader = PostgresReader(open_reader(url).conninfo)  # type: ignore[attr-defined]
        try:
            task = asyncio.create_task(reader.rows(slow, {"job_id": "job_r0"}))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert reader._idle == []  # its connection was closed, not kept
            assert (await reader.rows(_JOB, {"job_id": "job_r0"}))[0].status == "queued"
        finally:
            await reader.close()

    asyncio.run(run())


def test_an_unreachable_database_is_a_503_within_the_connect_timeout() -> None:
    async def run() -> None:
        reader = PostgresReader("postgresql://postgres@10.255.255.1:5432/none", connect_timeout=1)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ApiError) as caught:
            await reader.rows(_JOB, {"job_id": "job_r0"})
        assert caught.value.status == 503 and caught.value.code == "database_unavailable"
        assert caught.value.headers == {"Retry-After": "2"}
        assert asyncio.get_running_loop().time() - started < 5

    asyncio.run(run())
