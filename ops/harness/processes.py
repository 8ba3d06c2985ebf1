"""Child processes of a test, a chaos run or a benchmark: each with a name and a log file, leading its own
session (so a Ctrl-C reaches the parent first, and the parent stops the children itself) and told to stop when
the parent dies, even by SIGKILL; stopped together at the end, their whole process groups included."""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from client.procs import die_with_parent, signal_group, stop_groups
from ops.harness import ROOT


class Proc(subprocess.Popen[bytes]):
    """A child process (a Popen, so tests poll, signal and wait on it as on any other) with a name and a log
    file that takes its stdout and stderr."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "ab")  # closed when the process is stopped
        self.stopping_since: float | None = None  # SIGTERM sent: shutting down, not a fault's victim any more
        self.exit_seen = False
        try:
            super().__init__(cmd, cwd=ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=die_with_parent)
        except BaseException:
            self.log_file.close()
            raise

    def alive(self) -> bool:
        return self.poll() is None

    def signal_group(self, sig: int) -> None:
        """`sig` to its whole process group; gone already is fine."""
        signal_group(self, sig)

    def tail(self, chars: int = 3000) -> str:
        return tail(self.log_path, chars)


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@dataclass
class Processes:
    """Every child a run starts, each logging to `logdir/<name>.log`."""

    logdir: Path
    all: list[Proc] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, cmd, self.logdir / f"{name}.log", env)
        self.all.append(p)
        return p

    def stop(self, p: Proc, grace: float = 15.0) -> None:
        """SIGTERM its group, SIGKILL it after `grace` seconds; its group's leftovers go too. Stopped, it is no
        longer one of `all`: stop_all() does not signal its (by then free) process group id again."""
        exited = not p.alive()
        stop_groups([p], grace)
        if exited:  # it exited, but its children (if any) share its process group
            p.signal_group(signal.SIGKILL)
        p.log_file.close()
        if p in self.all:
            self.all.remove(p)

    def stop_all(self, grace: float = 20.0) -> None:
        """Every group SIGTERMed at once (their shutdown graces overlap), SIGKILLed after `grace`; all reaped."""
        stop_groups(list(reversed(self.all)), grace)
        for p in self.all:
            p.signal_group(signal.SIGKILL)
            p.log_file.close()
        self.all.clear()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and of its live descendants (an `svdq api --workers N` serves
    from its children; Linux /proc); NaN when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return [c for c in out if Path(f"/proc/{c}/stat").exists()]


@contextmanager
def no_interrupts() -> Iterator[None]:
    """Cleanup runs to the end: a second Ctrl-C must not leave a database or a process behind."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
