"""Child processes for `svdq dev`: start, watch, and stop them all cleanly."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def redis_server_cmd(port: int) -> list[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed; install it (apt-get install redis-server) "
                           "or set SVDQ_REDIS_URL to a running Redis")
    return [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning"]


@dataclass
class Supervisor:
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, *,
              tied: bool = False) -> subprocess.Popen[bytes]:
        """tied: the child gets SIGTERM when this process dies, even by SIGKILL (see die_with_parent)."""
        # own process group, so a Ctrl-C in the terminal reaches us first and we stop children in order
        proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                preexec_fn=die_with_parent if tied else None)
        self.procs.append((name, proc))
        return proc

    def restart(self, name: str, cmd: list[str], env: dict[str, str] | None = None, *,
                tied: bool = False) -> subprocess.Popen[bytes]:
        """Start `name` again in place of its exited process (which is reaped and forgotten)."""
        for entry in [e for e in self.procs if e[0] == name]:
            entry[1].wait()
            self.procs.remove(entry)
        return self.start(name, cmd, env, tied=tied)

    def first_exited(self) -> tuple[str, int] | None:
        for name, proc in self.procs:
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, grace: float = 15.0) -> None:
        stop_groups([proc for _, proc in reversed(self.procs)], grace)


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """`sig` to the child's process group (each child here leads its own session); gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop_groups(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every live child's group at once, so their shutdown graces overlap; SIGKILL any group still up
    after `grace` seconds; reap them all."""
    for proc in procs:
        if proc.poll() is None:
            signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait()


def die_with_parent() -> None:
    """In a child (preexec_fn): PR_SET_PDEATHSIG, so a parent killed outright still takes its children along."""
    import contextlib
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def cpu_model() -> str:
    import contextlib
    import platform
    from pathlib import Path

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


@contextmanager
def no_interrupts() -> Iterator[None]:
    """Cleanup runs to the end: a second Ctrl-C must not leave a database or a process behind."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])


@dataclass
class ScratchDatabase:
    """A throwaway PostgreSQL database for a benchmark or chaos run, created and dropped through an admin URL."""

    admin: Any  # sqlalchemy Engine with AUTOCOMMIT
    admin_url: str
    prefix: str
    name: str = ""
    created: bool = False

    def __post_init__(self) -> None:
        import secrets

        self.name = self.name or f"{self.prefix}_{secrets.token_hex(5)}"

    @property
    def url(self) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.name

    def create(self) -> None:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.created = True

    def drop(self) -> None:
        from sqlalchemy import text

        if not self.created:
            return
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.created = False
