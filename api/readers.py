"""Who runs the hot reads' statements (api/reads.py). On PostgreSQL, psycopg's async driver on the event loop: no
thread hop, no ORM, each statement compiled once and prepared by the server; on SQLite (dev and tests), the sync
engine in the threadpool. Both answer rows with attribute access (`row.status`), the same values either way.

The PostgreSQL pool is a small one of our own rather than psycopg_pool's, for how it fails: a checkout never waits
on a background reconnect loop. An idle connection is taken, or a new one is made on the spot (connect timeout 2 s),
so a request answers 503 database_unavailable within about two seconds while the database is away, and the first
request after it is back connects at once. Every statement runs in autocommit (no BEGIN, no ROLLBACK): a read sees
the last committed write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from models.db import create_db_engine

log = logging.getLogger(__name__)
Rows = list[Any]
_PG = postgresql.psycopg.dialect()  # type: ignore[attr-defined,no-untyped-call]


class Query:
    """A Core select whose only inputs are named bind parameters: built once at import, compiled once per reader."""

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        compiled = stmt.compile(dialect=_PG)
        self.pg_sql = str(compiled)
        self.pg_defaults = {k: v for k, v in compiled.params.items() if v is not None}


class Reader(Protocol):
    async def rows(self, query: Query, params: Mapping[str, Any]) -> Rows: ...

    async def close(self) -> None: ...


class ThreadedReader:
    """The sync engine in the threadpool: one hop, one pooled connection, one statement; once more on a fresh
    connection when the database had dropped the first (the read engine does not ping at checkout)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _rows(self, query: Query, params: Mapping[str, Any]) -> Rows:
        for attempt in (1, 2):
            try:
                with self.engine.connect() as conn:
                    return list(conn.execute(query.stmt, dict(params)))
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    async def rows(self, query: Query, params: Mapping[str, Any]) -> Rows:
        return await run_in_threadpool(self._rows, query, params)

    async def close(self) -> None:
        self.engine.dispose()


def _unavailable(exc: Exception) -> ApiError:
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    log.warning("database unavailable on a read: %s", first)
    return ApiError(503, "database_unavailable", "The database is not answering; try again shortly.",
                    headers={"Retry-After": "2"})


class PostgresReader:
    """psycopg async connections, at most `size` in use at once and at most `size` kept idle."""

    def __init__(self, conninfo: str, *, size: int = 10, connect_timeout: float = 2.0) -> None:
        self.conninfo = conninfo
        self.size = size
        self.connect_timeout = connect_timeout
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind_loop(self) -> asyncio.Semaphore:
        # connections belong to the event loop that made them: a reader used from another loop (a test client
        # started twice) forgets the old loop's connections instead of sharing them across loops
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None:
            self._loop, self._idle, self._slots = loop, [], asyncio.Semaphore(self.size)
        return self._slots

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, row_factory=namedtuple_row, connect_timeout=int(self.connect_timeout),
            options="-c TimeZone=UTC")

    async def _execute(self, conn: psycopg.AsyncConnection[Any], query: Query, params: Mapping[str, Any]) -> Rows:
        cur = await conn.execute(query.pg_sql, {**query.pg_defaults, **params}, prepare=True)
        return await cur.fetchall()

    async def rows(self, query: Query, params: Mapping[str, Any]) -> Rows:
        slots = self._bind_loop()
        async with slots:
            fresh = not self._idle
            try:
                conn = self._idle.pop() if self._idle else await self._connect()
            except psycopg.OperationalError as exc:
                raise _unavailable(exc) from exc
            try:
                try:
                    out = await self._execute(conn, query, params)
                except psycopg.OperationalError:
                    if fresh or not conn.broken:
                        raise
                    # the database had dropped this idle connection (a restart, an idle timeout): once more on a
                    # new one; a second failure is an outage
                    await conn.close()
                    conn = await self._connect()
                    out = await self._execute(conn, query, params)
            except psycopg.OperationalError as exc:
                await conn.close()
                raise _unavailable(exc) from exc
            except BaseException:
                await conn.close()  # cancelled mid-statement, or a bug: never give back a connection in doubt
                raise
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE and len(self._idle) < self.size:
                self._idle.append(conn)
            else:
                await conn.close()
            return out

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


def open_reader(database_url: str) -> Reader:
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return ThreadedReader(create_db_engine(database_url, ping=False))
    return PostgresReader(url.set(drivername="postgresql").render_as_string(hide_password=False))
