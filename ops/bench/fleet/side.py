"""The run's side processes (the canary's share of the fleet, the HTTP clients): each its own Python process, so
what it measures is not queued behind the simulator's GIL. A side process is `python -m <module> SPEC_JSON` with
the stack's settings in its environment; it prints "ready" once started, records while the window is open
("open" and "close" on its stdin), and after "stop" (or the end of its stdin) prints what it recorded as one JSON
line and exits. It leads its own session and dies with its parent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from client.procs import die_with_parent
from ops.harness import ROOT


class Side:
    """The main process's handle on one side process."""

    def __init__(self, module: str, spec: dict[str, Any], env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self._log = open(log_path, "ab")  # closed in close()
        self.proc = subprocess.Popen([sys.executable, "-m", module, json.dumps(spec)], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     start_new_session=True, preexec_fn=die_with_parent, text=True)

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.module} exited ({self.proc.poll()}); see {Path(self._log.name).name}")
        return line

    def wait_ready(self) -> None:
        if self._line().strip() != "ready":
            raise RuntimeError(f"{self.module} did not start; see {Path(self._log.name).name}")

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        self.send("stop")
        return dict(json.loads(self._line()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()


def commands() -> Iterator[str]:
    """In a side process: the words on stdin, up to "stop" (or its end)."""
    for line in sys.stdin:
        word = line.strip()
        if word == "stop":
            return
        yield word


def report(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)
