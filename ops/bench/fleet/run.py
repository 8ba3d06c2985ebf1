"""The fleet simulation's command line: options, one private stack for the whole sweep (redis-server and the API
as subprocesses, a scratch PostgreSQL database), the image every job renders, each fleet size in turn (size.py),
the report on stdout (and as JSON), and the cleanup, also on failure, Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine

import ops.bench.fleet
from ops.bench.fleet.plan import FULL, MODEL, PG_ADMIN_URL, QUICK, WEBHOOK_URL, Options, log, stack_settings
from ops.bench.fleet.probes import Probe
from ops.bench.fleet.report import loadavg, render
from ops.bench.fleet.size import measure
from ops.bench.lifecycle.report import versions
from ops.harness.databases import ScratchDatabase
from ops.harness.images import sample_png
from ops.harness.machine import machine
from ops.harness.runs import run_on_private_stack
from ops.harness.stack import Stack


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = ops.bench.fleet.__doc__
    p = argparse.ArgumentParser(prog="python -m ops.bench.fleet", description=doc.split("\n\n")[0] if doc else None)
    p.add_argument("--quick", action="store_true", help="tiny sizes and short windows (the test suite's mode)")
    p.add_argument("--sizes", help="fleet sizes, comma-separated (full: 10,100,1000,5000)")
    p.add_argument("--render-s", type=float, help="seconds one render waits (full: 12, SVD-XT on an H100)")
    p.add_argument("--warmup-s", type=float, help="seconds before the window opens (default: render_s + 8)")
    p.add_argument("--window-s", type=float, help="seconds of the steady window (full: 30)")
    p.add_argument("--api-workers", type=int, help="`svdq api` processes (SVDQ_API_WORKERS; default 1)")
    p.add_argument("--canary-workers", type=int, help="workers of each size in the canary process (full: 50)")
    p.add_argument("--threads", type=int, help="blocking calls at once, and database connections (full: 32)")
    p.add_argument("--poll-connections", type=int, help="connections the status pollers share (full: 128)")
    p.add_argument("--submit-connections", type=int, help="connections the submitters share (full: 32)")
    p.add_argument("--poll-hz", type=float, help="status GETs per second per job in flight (1)")
    p.add_argument("--maintenance", choices=["fleet", "one"],
                   help="fleet: every worker runs the pass every interval, as real workers do (default); one: a "
                        "single caller")
    p.add_argument("--no-reuse", action="store_true", help='submit with "reuse": false (the API skips its '
                   "look for a reusable result, and with it its scan of the workers' presence keys)")
    p.add_argument("--lease-s", type=float, help="SVDQ_LEASE_S (full: 60; renewed every lease_s / 4)")
    p.add_argument("--maintenance-interval-s", type=float, help="SVDQ_MAINTENANCE_INTERVAL_S (full: 10)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the process logs")
    return p.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    base = dict(QUICK if args.quick else FULL)
    given = {"render_s": args.render_s, "warmup_s": args.warmup_s, "window_s": args.window_s,
             "threads": args.threads, "api_workers": args.api_workers, "canary_workers": args.canary_workers,
             "poll_connections": args.poll_connections, "submit_connections": args.submit_connections,
             "poll_hz": args.poll_hz, "maintenance": args.maintenance, "lease_s": args.lease_s,
             "maintenance_interval_s": args.maintenance_interval_s}
    base.update({k: v for k, v in given.items() if v is not None})
    if args.sizes:
        base["sizes"] = tuple(int(x) for x in args.sizes.split(",") if x.strip())
    if args.no_reuse:
        base["reuse"] = False
    if args.warmup_s is None and args.render_s is not None:
        base["warmup_s"] = base["render_s"] + (0.5 if args.quick else 8.0)
    opt = Options(**base, quick=args.quick)
    if not opt.sizes or min(opt.sizes) < 1 or min(opt.threads, opt.poll_connections, opt.submit_connections,
                                                    opt.api_workers) < 1 or opt.canary_workers < 0:
        raise SystemExit("sizes, threads and connection counts must be at least 1")
    if min(opt.render_s, opt.window_s, opt.poll_hz) <= 0 or opt.warmup_s < 0:
        raise SystemExit("render, window and poll rate must be positive")
    return opt


def _terminate(signum: int, _: Any) -> None:
    # SIGTERM takes Ctrl-C's path: the size's own cleanup, then main()'s
    raise KeyboardInterrupt


def sweep(stack: Stack, db: ScratchDatabase, opt: Options) -> list[dict[str, Any]]:
    assert stack.api is not None
    image_id = stack.upload(sample_png(1024, 576))["id"]
    body: dict[str, Any] = {"model": MODEL, "image_id": image_id, "webhook_url": WEBHOOK_URL}
    if not opt.reuse:
        body["reuse"] = False
    own = create_engine(db.url, isolation_level="AUTOCOMMIT", pool_size=1)
    probe = Probe(db.admin, own, db.name, stack.redis_url, stack.api.pid)
    try:
        return [measure(stack, probe, opt, n, body) for n in opt.sizes]
    finally:
        probe.close()
        own.dispose()


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every size was measured, 1 when the run failed, 130 when interrupted."""
    args = parse_args(argv)
    opt = options(args)
    os.environ["HF_HUB_OFFLINE"] = "1"
    signal.signal(signal.SIGTERM, _terminate)
    when = dt.datetime.now(dt.UTC)
    load = {"start": loadavg()}

    def run(stack: Stack, db: ScratchDatabase) -> None:
        rows = sweep(stack, db, opt)
        load["end"] = loadavg()
        where = machine()
        vers = versions(stack.redis_url, stack.settings.database_url)
        print(render(rows, when=when, machine=where, vers=vers, opt=opt, load=load), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"date": when.isoformat(), "machine": where, "versions": vers,
                                             "load_average": load, "options": asdict(opt), "database": db.name,
                                             "sizes": rows}, indent=2, default=str) + "\n")

    return run_on_private_stack(run, tmp_prefix="svdq-fleet-", db_prefix="svdq_bench", admin_url=PG_ADMIN_URL,
                                log=log, keep_logs=args.keep_logs, **cast(dict[str, Any], stack_settings(opt)))
