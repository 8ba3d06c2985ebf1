"""How the user's commands answer: the exit codes, the one `error: <code>: <message>` line, the job or sweep
on stdout (`--json` for scripts) and live progress on stderr."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from client.types import Job, Sweep

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4, 5
EXIT_CODES_HELP = """exit codes (submit --wait, wait, sweep --wait and every other command):
  0  done: the job or sweep succeeded, or the command did what it says
  1  the job or sweep ended failed            stderr: error: <code>: <message>
  2  the command line is wrong (a file it cannot read or write, a bad -p, no API key)
                                              stderr: error: <code>: <message>
  3  the job or sweep ended canceled          stderr: error: <code>: <message>
  4  the API refused the request (4xx)        stderr: error: <code>: <message>
  5  the API could not be reached or failed (5xx, connection; worth retrying later)"""
# what the SDK itself refuses before any request: the command line (or the environment) is wrong
USAGE_CODES = frozenset({"no_api_key", "no_image", "image_unreadable", "bad_argument", "wandb_missing",
                         "spec_unreadable", "bad_spec", "image_url_unreachable"})
ENDINGS = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "canceled": EXIT_CANCELED}


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turns an error answer or a dead connection into `error: <code>: <message>` and its exit code."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        import httpx

        from client.sdk import SvdqError

        try:
            return fn(args)
        except SvdqError as exc:
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            for d in exc.details:
                print(f"  {d.get('field')}: {d.get('message')}" if isinstance(d, dict) else f"  {d}", file=sys.stderr)
            if exc.code in USAGE_CODES:
                return EXIT_USAGE
            return EXIT_UNREACHABLE if exc.status >= 500 else EXIT_REFUSED
        except httpx.TransportError as exc:
            print(f"error: unreachable: {type(exc).__name__}: {exc}; is the API running at SVDQ_API_URL?",
                  file=sys.stderr)
            return EXIT_UNREACHABLE
        except OSError as exc:  # this machine's side: a file it cannot write (-o into a missing folder, a full disk)
            where = f" {exc.filename!r}" if exc.filename else ""
            print(f"error: local_file: cannot write{where}: {exc.strerror or exc}; give -o a file path this user "
                  "can write.", file=sys.stderr)
            return EXIT_USAGE

    return run


def line(obj: Job | Sweep) -> str:
    if isinstance(obj, Sweep):
        counts = " ".join(f"{k}={v}" for k, v in obj.counts.items() if v)
        grids = "".join(f"\n  grid {g.image_id}: {g.status} {g.video_url or ''}" for g in obj.grids)
        return f"{obj.id} {obj.status} {counts}{grids}"
    line = f"{obj.id} {obj.status}"
    if r := obj.result:
        line += f" {r.frames} frames {r.width}x{r.height} @ {r.fps} fps {r.video_url}"
    if obj.error:
        line += f" {obj.error.code}: {obj.error.message}"
    return line


def show(obj: Job | Sweep, as_json: bool) -> None:
    print(json.dumps(obj.model_dump(mode="json"), indent=2) if as_json else line(obj))


def end(obj: Job | Sweep, as_json: bool) -> int:
    show(obj, as_json)
    code = ENDINGS.get(obj.status, EXIT_FAILED)
    if code:
        err = obj.error if isinstance(obj, Job) else None
        why = f"{err.code}: {err.message}" if err else f"{obj.status}: {obj.id} ended {obj.status}"
        print(f"error: {why}", file=sys.stderr)
    return code


class ProgressView:
    """Live progress on stderr: a rich bar on a terminal; elsewhere (logs, CI, pipes) one plain line per
    change, so a script's log still shows how far a job got."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.quiet, self.console = quiet, Console(stderr=True)
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self.last = ""

    def __enter__(self) -> ProgressView:
        if not self.quiet and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[where]}"), TimeElapsedColumn(), console=self.console)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def job(self, job: Job) -> None:
        where = f"queued, position {job.queue_position}" if job.status == "queued" else job.status
        if job.status == "running" and job.progress.stage:
            where = job.progress.stage
        self.show(job.id, job.progress.step, job.progress.total, where)

    def sweep(self, sweep: Sweep) -> None:
        counts = " ".join(f"{k}={v}" for k, v in sweep.counts.items() if v)
        self.show(sweep.id, sweep.finished_cells, sweep.total, f"{sweep.status} {counts}")

    def show(self, name: str, done: int, total: int, where: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            if name not in self.tasks:
                self.tasks[name] = self.bar.add_task(name, total=total or None, where=where)
            self.bar.update(self.tasks[name], completed=done, total=total or None, where=where)
            return
        line = f"{name} {done}/{total} {where}"
        if line != self.last:
            self.last = line
            print(line, file=sys.stderr, flush=True)
