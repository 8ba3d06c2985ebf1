"""The outside services tests and runs need: PostgreSQL (started here if installed but stopped), a private
redis-server, moto's S3 server over HTTP. In a test a missing service skips it locally and fails it with
CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from client.procs import free_port, redis_server_cmd, wait_for_port
from ops.harness.processes import Processes

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_ADMIN_URL = os.environ.get("SVDQ_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)


def unavailable(reason: str) -> None:
    """Skip the test calling this (fail it with CI=true): `reason` says which service is missing."""
    import pytest

    if IN_CI:
        pytest.fail(f"{reason}; with CI=true integration services must be reachable")
    pytest.skip(reason)


def _pg_reachable() -> bool:
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure to connect means "not reachable"
        return False


def _start_local_postgres() -> None:
    """The harness starts the machine's PostgreSQL cluster when it is installed but not running."""
    versions = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not versions.is_dir():
        return
    for version in sorted(p.name for p in versions.iterdir()):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                       check=False, capture_output=True, timeout=60)
    for _ in range(30):
        if _pg_reachable():
            return
        time.sleep(1)


def require_postgres() -> None:
    """PostgreSQL answers (started here if installed but stopped), or the test skips locally / fails in CI."""
    if not _pg_reachable():
        _start_local_postgres()
        if not _pg_reachable():
            unavailable(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")


class RedisProcess:
    """A private redis-server with no persistence on a port of its own, which may be killed and started again,
    empty, on the same port. Given `procs`, it is one of a run's logged processes (named "redis")."""

    def __init__(self, procs: Processes | None = None) -> None:
        require_redis_server()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.procs = procs
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> subprocess.Popen[bytes]:
        cmd = redis_server_cmd(self.port)
        if self.procs is not None:
            self.proc = self.procs.start("redis", cmd)
        else:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        if not wait_for_port(self.port, timeout):
            log = self.procs.all[-1].tail() if self.procs is not None else ""
            raise RuntimeError(f"redis-server did not start on port {self.port}: {log}")
        return self.proc

    def kill(self) -> None:
        """SIGKILL: what it held is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server for as long as the block runs; its URL."""
    server = RedisProcess()
    try:
        try:
            server.start()
        except RuntimeError:
            unavailable("redis-server did not start")
        yield server.url
    finally:
        server.stop()


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server in a thread of this process, over HTTP; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
