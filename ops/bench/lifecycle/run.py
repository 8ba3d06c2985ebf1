"""The lifecycle benchmark's command line: options, a private stack (Redis and the API as subprocesses, a
scratch PostgreSQL database), the four rows, the report on stdout (and as JSON), and the cleanup."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ops.bench.lifecycle
from ops.bench.lifecycle.plan import FULL, NEVER_REFUSE, PG_ADMIN_URL, QUICK, Options, log
from ops.bench.lifecycle.report import render, versions
from ops.bench.lifecycle.rows import run_bench
from ops.harness.databases import ScratchDatabase
from ops.harness.machine import machine
from ops.harness.runs import run_on_private_stack
from ops.harness.stack import Stack


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = ops.bench.lifecycle.__doc__
    p = argparse.ArgumentParser(prog="python -m ops.bench.lifecycle",
                                description=doc.split("\n\n")[0] if doc else None)
    p.add_argument("--quick", action="store_true", help="small counts (the test suite's mode)")
    p.add_argument("--load-seconds", type=float, help="row 1: seconds of load per endpoint (full 10)")
    p.add_argument("--concurrency", type=int, help="row 1: concurrent clients (16)")
    p.add_argument("--pollers", type=int, help="row 2: concurrent pollers (full 200)")
    p.add_argument("--poll-seconds", type=float, help="row 2: seconds of polling (full 10)")
    p.add_argument("--poll-interval", type=float, help="row 2: seconds each poller waits between polls (full 1)")
    p.add_argument("--jobs", type=int, help="row 3: tiny jobs, one at a time (full 100)")
    p.add_argument("--queued", type=int, help="row 4: jobs queued in bulk (full 100000)")
    p.add_argument("--samples", type=int, help="row 4: sequential requests per latency probe (full 300)")
    p.add_argument("--api-workers", type=int, help="API processes (`svdq api --workers N`; the targets are for 1)")
    p.add_argument("--cache-dir", type=Path, help="where the tiny model is built (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the rows and details here")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the process logs")
    return p.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    base = QUICK if args.quick else FULL
    vals = {k: getattr(args, k) if getattr(args, k, None) is not None else v for k, v in base.items()}
    opt = Options(**vals, quick=args.quick)
    if min(opt.concurrency, opt.pollers, opt.jobs, opt.queued, opt.samples, opt.api_workers) < 1:
        raise SystemExit("counts must be at least 1")
    return opt


def _terminate(signum: int, _: Any) -> None:
    # SIGTERM takes Ctrl-C's path: asyncio.run cancels the run, then the cleanup in main() runs
    os.kill(os.getpid(), signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every row was measured, 1 when the run failed, 130 when interrupted."""
    args = parse_args(argv)
    opt = options(args)
    os.environ["HF_HUB_OFFLINE"] = "1"
    signal.signal(signal.SIGTERM, _terminate)
    when = dt.datetime.now(dt.UTC)

    def run(stack: Stack, db: ScratchDatabase) -> None:
        rows, details = asyncio.run(run_bench(stack, opt))
        where = machine()
        vers = versions(stack.redis_url, stack.settings.database_url)
        print(render(rows, when, where, vers, opt, details), flush=True)
        if args.json:
            args.json.write_text(json.dumps({
                "date": when.isoformat(), "machine": where, "versions": vers, "options": asdict(opt),
                "database": db.name,
                "rows": [{"metric": r.metric, "value": r.value, "target": r.target, "met": r.met} for r in rows],
                "details": details}, indent=2, default=str) + "\n")

    return run_on_private_stack(run, tmp_prefix="svdq-bench-", db_prefix="svdq_bench", admin_url=PG_ADMIN_URL,
                                log=log, keep_logs=args.keep_logs, cache_dir=args.cache_dir, SVDQ_ENV="dev",
                                SVDQ_API_WORKERS=str(opt.api_workers), **NEVER_REFUSE)
