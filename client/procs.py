"""Child processes for `svdq dev` and `svdq workers`: free ports, a private redis-server's command line, and a
supervisor that starts, watches and stops them all cleanly. (The harness for tests, benchmarks and the chaos run
is ops/harness, outside this package.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field


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

    underneath: set[str] = field(default_factory=set)  # what the others need until they are gone (redis)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, *,
              tied: bool = False, underneath: bool = False) -> subprocess.Popen[bytes]:
        """tied: the child gets SIGTERM when this process dies, even by SIGKILL (see die_with_parent).
        underneath: the others depend on it, so stop() stops it only once they have exited."""
        # own process group, so a Ctrl-C in the terminal reaches us first and we stop children in order
        proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                preexec_fn=die_with_parent if tied else None)
        self.procs.append((name, proc))
        if underneath:
            self.underneath.add(name)
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
        """The others first (a worker hands back its job and acks through Redis), then what they stood on."""
        stop_groups([proc for name, proc in reversed(self.procs) if name not in self.underneath], grace)
        stop_groups([proc for name, proc in reversed(self.procs) if name in self.underneath], grace)


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
