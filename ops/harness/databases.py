"""Throwaway PostgreSQL databases: created through an admin URL for one test session, chaos run or benchmark,
dropped at its end; and a look at which ones are left."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from ops.harness.services import PG_ADMIN_URL, require_postgres


@dataclass
class ScratchDatabase:
    """A database named `<prefix>_<10 hex digits>`, made and dropped (WITH (FORCE)) through `admin_url`."""

    admin_url: str
    prefix: str
    name: str = ""
    created: bool = False
    admin: Any = field(init=False, repr=False)  # sqlalchemy Engine with AUTOCOMMIT

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.prefix}_{secrets.token_hex(5)}"
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})

    @property
    def url(self) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.name

    def create(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.created = True

    def drop(self) -> None:
        if not self.created:
            return
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.created = False

    def dispose(self) -> None:
        self.admin.dispose()


def end_run(db: ScratchDatabase, tmp: Path, *, keep_logs: bool, log: Callable[[str], None]) -> None:
    """A chaos run's or benchmark's last step: its database dropped (a failure to drop is reported, and the rest
    still runs), and its temp dir of process logs kept (`keep_logs`) or removed."""
    try:
        if db.created:
            db.drop()
            log(f"dropped database {db.name}")
    except Exception as exc:  # noqa: BLE001 - report it, and keep cleaning up
        log(f"could not drop database {db.name}: {exc}")
    db.dispose()
    if keep_logs:
        log(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A scratch database for as long as the block runs (the test skips locally without PostgreSQL); its URL."""
    require_postgres()
    db = ScratchDatabase(PG_ADMIN_URL, "svdq_test")
    try:
        db.create()
        yield db.url
    finally:
        db.drop()
        db.dispose()


def databases_named(prefix: str) -> set[str]:
    """The PostgreSQL databases whose names start with `prefix` (a run's scratch databases, to see them dropped)."""
    eng = create_engine(PG_ADMIN_URL)
    try:
        with eng.connect() as conn:
            return set(conn.scalars(text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                    {"p": prefix + "%"}))
    finally:
        eng.dispose()
