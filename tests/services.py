"""Real services for integration tests: a private redis-server, a throwaway PostgreSQL database, moto's
S3 server over HTTP. Locally a missing service skips its tests; with CI=true it fails them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from client.procs import free_port, redis_server_cmd, wait_for_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("SVDQ_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; with CI=true integration services must be reachable")
    pytest.skip(reason)


@contextmanager
def redis_server() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(redis_server_cmd(port), stdout=subprocess.DEVNULL)
    try:
        if not wait_for_port(port, 10):
            unavailable("redis-server did not start")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _pg_reachable() -> bool:
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
        return True
    except Exception:
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


def databases_named(prefix: str) -> set[str]:
    """The PostgreSQL databases whose names start with `prefix` (a run's scratch databases, to see them dropped)."""
    eng = create_engine(PG_ADMIN_URL)
    try:
        with eng.connect() as conn:
            return set(conn.scalars(text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                    {"p": prefix + "%"}))
    finally:
        eng.dispose()


@contextmanager
def postgres_database() -> Iterator[str]:
    require_postgres()
    name = f"svdq_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def moto_s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class RedisProcess:
    """A private redis-server this test may kill and start again, empty, on the same port."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            unavailable("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(redis_server_cmd(self.port), stdout=subprocess.DEVNULL)
        if not wait_for_port(self.port, 10):
            raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class TcpProxy:
    """Forwards a local port to a target; `cut()` drops every connection and refuses new ones, as a
    database outage looks to its clients; `restore()` serves again."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        import socket
        import threading

        self.target = (target_host, target_port)
        self.port = free_port()
        self._socket_mod, self._threading = socket, threading
        self._conns: list[Any] = []
        self._listener: Any = None
        self._lock = threading.Lock()

    def restore(self) -> None:
        s = self._socket_mod.socket()
        s.setsockopt(self._socket_mod.SOL_SOCKET, self._socket_mod.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        self._threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket_mod.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self) -> None:
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(); close() alone leaves the port listening
                self._listener.shutdown(self._socket_mod.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(self._socket_mod.SHUT_RDWR)
                    conn.close()
                except OSError:
                    pass
            self._conns.clear()
