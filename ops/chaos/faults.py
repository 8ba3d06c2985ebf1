"""The faults of a chaos run: when each comes (a fraction of the jobs ended), which worker it hits (one that
is rendering a job, when there is one), and the faults themselves: SIGKILL a worker, restart Redis empty,
SIGTERM a worker. A killed or SIGTERMed worker is replaced at once."""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib
from sqlalchemy import select

from models.tables import Job
from ops.chaos.plan import Run, log
from ops.harness.processes import Proc


@dataclass
class Event:
    kind: str  # kill | wipe | sigterm
    at_fraction: float
    done_at_s: float | None = None
    ended_jobs: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def schedule(kills: int, wipes: int, sigterms: int, rng: random.Random) -> list[Event]:
    """Every fault at its own fraction of jobs ended, spread evenly over 5%..80% of the run, in random order."""
    kinds = ["kill"] * kills + ["wipe"] * wipes + ["sigterm"] * sigterms
    rng.shuffle(kinds)
    n = len(kinds)
    lo, hi = 0.05, 0.80
    return [Event(kind, lo + (hi - lo) * i / (n - 1) if n > 1 else lo) for i, kind in enumerate(kinds)]


def running_holders(run: Run) -> dict[int, str]:
    """pid of each live worker now rendering a job -> that job's id."""
    with run.engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.worker).where(Job.status == "running")).all()
    out: dict[int, str] = {}
    for w in run.stack.live_workers():
        for job_id, worker in rows:
            if worker and f"w{w.pid}@" in worker:
                out[w.pid] = job_id
    return out


def pick_victim(run: Run, rng: random.Random, wait_s: float = 15.0) -> tuple[Proc | None, str | None]:
    """A worker that is rendering a job, waiting a little for one; else any live worker."""
    deadline = time.monotonic() + wait_s
    while True:
        holders = running_holders(run)
        if holders:
            pid = rng.choice(sorted(holders))
            return next(w for w in run.stack.workers if w.pid == pid), holders[pid]
        if time.monotonic() > deadline:
            live = run.stack.live_workers()
            return (rng.choice(live), None) if live else (None, None)
        time.sleep(0.2)


def do_kill(run: Run, ev: Event, rng: random.Random) -> bool:
    victim, job_id = pick_victim(run, rng)
    if victim is None:
        return False
    victim.signal_group(signal.SIGKILL)
    victim.wait(10)
    victim.exit_seen = True
    repl = run.start_worker()
    ev.detail = {"worker": victim.name, "pid": victim.pid, "job": job_id, "replacement": repl.name}
    log(f"SIGKILLed {victim.name} (pid {victim.pid}) rendering {job_id or 'nothing'}; {repl.name} replaces it")
    return True


def do_wipe(run: Run, ev: Event) -> bool:
    redis = run.stack.redis
    assert redis is not None and redis.proc is not None
    run_id_before = redis_run_id(run.stack.redis_url)
    old_pid = redis.proc.pid
    redis.kill()
    new_pid = redis.start(timeout=15).pid
    run_id_after = redis_run_id(run.stack.redis_url)
    ev.detail = {"old_pid": old_pid, "new_pid": new_pid, "run_id_before": run_id_before,
                 "run_id_after": run_id_after}
    log(f"restarted redis-server empty on port {redis.port} (pid {old_pid} -> {new_pid})")
    return run_id_before != run_id_after


def do_sigterm(run: Run, ev: Event, rng: random.Random) -> bool:
    victim, job_id = pick_victim(run, rng)
    if victim is None:
        return False
    victim.send_signal(signal.SIGTERM)  # the worker process itself, as an orchestrator's stop does
    victim.stopping_since = time.monotonic()
    repl = run.start_worker()
    ev.detail = {"worker": victim.name, "pid": victim.pid, "job": job_id, "replacement": repl.name}
    log(f"SIGTERMed {victim.name} (pid {victim.pid}) rendering {job_id or 'nothing'}; {repl.name} replaces it")
    return True


def do_event(run: Run, ev: Event, rng: random.Random) -> bool:
    if ev.kind == "kill":
        return do_kill(run, ev, rng)
    if ev.kind == "wipe":
        return do_wipe(run, ev)
    return do_sigterm(run, ev, rng)


def redis_run_id(url: str) -> str | None:
    """The redis-server's run id: a new one after a restart."""
    with contextlib.suppress(Exception):
        r = redis_lib.Redis.from_url(url, socket_timeout=3)
        try:
            return str(r.info("server")["run_id"])
        finally:
            r.close()
    return None
