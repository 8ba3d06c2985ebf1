"""The chaos run's command line and the run itself: start the stack, submit the jobs, deal the faults while they
end, report, and clean up whatever happened (every process stopped, the database dropped)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

import ops.chaos
from ops.chaos.evidence import ended_count
from ops.chaos.faults import Event, do_event, schedule
from ops.chaos.plan import MODEL, PARAMS, PG_ADMIN_URL, TIMINGS, Options, Run, log
from ops.chaos.report import build_report, render
from ops.harness import ROOT
from ops.harness.databases import ScratchDatabase, end_run
from ops.harness.images import sample_png
from ops.harness.processes import Processes, no_interrupts
from ops.harness.stack import start_stack
from ops.harness.webhooks import WebhookReceiver


def refuse_every_7th_first(job_id: str, first: bool) -> bool:
    """The receiver answers 500 to the first delivery of every 7th job, so retries (with the same id) are part
    of the run."""
    return first and int(hashlib.sha256(job_id.encode()).hexdigest(), 16) % 7 == 0


def start(tmp: Path, procs: Processes, db: ScratchDatabase, cache_dir: Path, workers: int) -> Run:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed")
    from models.tiny import ensure_tiny

    log(f"building the tiny model into {cache_dir} (once)")
    ensure_tiny(cache_dir)  # up front, so the workers (and their replacements) only load it

    db.create()
    log(f"created database {db.name}; migrating")
    # several workers share few cores: one intra-op thread each avoids OpenMP threads spinning against
    # each other (a deployment knob, not a change to the system under test); the caller's choice wins
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    stack = start_stack(
        tmp, procs, database_url=db.url, cache_dir=cache_dir, api_key="svdq_chaos_" + secrets.token_urlsafe(24),
        workers=workers, model=MODEL, api_timeout=120, worker_timeout=300,
        SVDQ_ENV="dev", **TIMINGS,
        # the run's own webhook receiver listens on loopback
        SVDQ_ALLOW_PRIVATE_URLS="true", SVDQ_WEBHOOK_BACKOFF_S="0.5",
        SVDQ_RATE_LIMIT_PER_S="0",  # a load generator, not a rate-limit test
        **{var: os.environ.get(var, threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    log(f"API ready at {stack.url}, redis at {stack.redis_url}; "
        f"{len(stack.workers)} workers ready ({', '.join(f'{w.name} pid {w.pid}' for w in stack.workers)})")
    return Run(stack=stack, engine=create_engine(db.url, pool_pre_ping=True),
               hooks=WebhookReceiver(refuse=refuse_every_7th_first))


def submit_jobs(run: Run, n: int, seed_base: int) -> list[str]:
    image_id = run.stack.upload(sample_png(128, 64), filename="chaos.png")["id"]
    # a distinct seed per job and reuse off: every job is rendered, none finished from another's result
    ids = [run.stack.submit(image_id, model=MODEL, params={**PARAMS, "seed": seed_base + i}, reuse=False,
                            webhook_url=run.hooks.url)["id"] for i in range(n)]
    log(f"submitted {n} jobs")
    return ids


def chaos(run: Run, ids: list[str], opt: Options, rng: random.Random, t0: float) -> list[Event]:
    """Deals the faults as the jobs end, replaces workers that die by themselves; the faults done."""
    events = schedule(opt.kills, opt.wipes, opt.sigterms, rng)
    pending = list(events)
    done: list[Event] = []
    deadline = t0 + opt.deadline
    last_report = 0.0
    while time.monotonic() < deadline:
        try:
            ended = ended_count(run.engine, ids)
        except Exception as exc:  # noqa: BLE001 - the database blinked; look again
            log(f"could not read job states: {exc}")
            time.sleep(1)
            continue
        if ended >= len(ids):
            break
        if pending and ended >= pending[0].at_fraction * len(ids):
            ev = pending.pop(0)
            ok = do_event(run, ev, rng)
            if ok:
                ev.done_at_s, ev.ended_jobs = round(time.monotonic() - t0, 1), ended
                done.append(ev)
            else:
                log(f"could not do {ev.kind}: no live worker")
        for w in run.stack.workers:  # a worker that died by itself is reported and replaced
            if not w.alive() and not w.exit_seen:
                w.exit_seen = True
                if w.stopping_since is not None:
                    log(f"{w.name} stopped after SIGTERM with {w.returncode} in "
                        f"{time.monotonic() - w.stopping_since:.1f} s")
                else:
                    log(f"{w.name} exited by itself with {w.returncode}; starting a replacement")
                    run.start_worker()
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            log(f"{ended}/{len(ids)} jobs ended, {len(done)}/{len(events)} faults done")
        time.sleep(0.3)
    for ev in pending:
        log(f"not done before the jobs ended: {ev.kind} at {ev.at_fraction:.0%}")
    return done


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = ops.chaos.__doc__
    p = argparse.ArgumentParser(prog="python -m ops.chaos", description=doc.split("\n\n")[0] if doc else None)
    p.add_argument("--jobs", type=int, default=200, help="jobs to submit (200)")
    p.add_argument("--kills", type=int, default=10, help="workers to SIGKILL, each replaced (10)")
    p.add_argument("--wipes", type=int, default=3, help="times to restart Redis with its data wiped (3)")
    p.add_argument("--sigterms", type=int, default=1, help="workers to SIGTERM, each replaced (1)")
    p.add_argument("--workers", type=int, default=3, help="tiny workers running at once (3)")
    p.add_argument("--deadline", type=float, default=900.0, help="seconds for every job to end, from submission (900)")
    p.add_argument("--seed", type=int, help="random seed for the fault order and victims (default: random)")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "models",
                   help="where the tiny model is built once (var/models)")
    p.add_argument("--json", type=Path, help="also write the report here as JSON")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the process logs")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.workers < 1 or min(args.kills, args.wipes, args.sigterms) < 0:
        p.error("--jobs and --workers must be at least 1, fault counts at least 0")
    return args


def _terminate(signum: int, _: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 on PASS, 1 on FAIL, 2 when the stack could not be started, 130 when interrupted."""
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    opt = Options(jobs=args.jobs, kills=args.kills, wipes=args.wipes, sigterms=args.sigterms,
                  workers=args.workers, deadline=args.deadline, seed=seed)
    rng = random.Random(seed)
    os.environ["HF_HUB_OFFLINE"] = "1"
    signal.signal(signal.SIGTERM, _terminate)
    when = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="svdq-chaos-"))
    procs = Processes(tmp)
    db = ScratchDatabase(PG_ADMIN_URL, "svdq_chaos")
    run: Run | None = None
    code = 2
    keep = args.keep_logs
    try:
        run = start(tmp, procs, db, args.cache_dir.resolve(), opt.workers)
        code = 1
        t0 = time.monotonic()
        ids = submit_jobs(run, opt.jobs, seed_base=rng.randrange(2**31))
        events = chaos(run, ids, opt, rng, t0)
        run.hooks.wait_all(ids, timeout=90)  # deliveries retry with backoff after the last job ends
        for w in run.stack.workers:  # the SIGTERMed worker gets its grace to stop before the counts are taken
            if w.stopping_since is not None and w.alive():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.wait(max(0.1, 30 - (time.monotonic() - w.stopping_since)))
        wall_s = time.monotonic() - t_start
        # stop the workers before reading their logs, so every line is written
        started = list(procs.all)
        procs.stop_all()
        rep = build_report(run, ids, opt, events, when, wall_s, db.name, started)
        print(render(rep), flush=True)
        if args.json:
            args.json.write_text(json.dumps(asdict(rep), indent=2, default=str) + "\n")
        code = 0 if rep.passed else 1
        keep = keep or not rep.passed
        return code
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        code = 130
        return code
    except Exception as exc:  # noqa: BLE001 - any failure: report it, then clean up
        log(f"failed: {exc.__class__.__name__}: {exc}")
        for p in procs.all:
            if p.name == "api" or p.name.startswith("worker"):
                log(f"--- {p.name} log tail ---\n{p.tail()}")
        return code
    finally:
        with no_interrupts():
            procs.stop_all()
            if run is not None:
                run.stack.client.close()
                run.engine.dispose()
                run.hooks.server.shutdown()
            end_run(db, tmp, keep_logs=keep or code != 0, log=log)
