"""Chaos run: many tiny jobs through a real stack while workers are SIGKILLed, Redis restarts empty and a
worker is asked to stop; then check that every job ended exactly once, with its result stored.

One command starts everything on loopback (its own redis-server, a throwaway PostgreSQL database, local file
storage in a temp dir, the API and the workers as `svdq` subprocesses), prints a Markdown report to stdout,
stops every process it started (the restarted ones too) and drops the database:

    .venv/bin/python ops/chaos/run.py                        # 200 jobs, 10 kills, 3 Redis wipes, 1 SIGTERM
    .venv/bin/python ops/chaos/run.py --jobs 20 --kills 2 --wipes 1 --workers 2   # a short run
    .venv/bin/python ops/chaos/run.py --json out.json        # also write the numbers as JSON

Faults are spread over the run by the fraction of jobs ended so far. A SIGKILL goes to a worker that is
rendering a job when there is one (that is the fault that matters), and a new `svdq worker` replaces it
at once; a Redis wipe kills redis-server and starts a new, empty one on the same port; a SIGTERM asks one
rendering worker to stop (it gets SVDQ_SHUTDOWN_GRACE_S, then hands its job back) and a replacement starts.

PASS needs: every job succeeded, none lost (still queued at the end), none stuck (running with an expired
lease at the end), none rendered to completion twice (counted from the `job <id> succeeded` lines of every
worker log), exactly two result objects per job (video.mp4, poster.jpg), and every fault actually done.
Exit status 0 on PASS, 1 on FAIL, 2 when the stack could not be started, 130 when interrupted.
Progress goes to stderr; stdout holds only the report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import redis as redis_lib
from PIL import Image
from sqlalchemy import Engine, create_engine, func, select

from client.procs import (
    ScratchDatabase,
    cpu_model,
    die_with_parent,
    free_port,
    no_interrupts,
    redis_server_cmd,
    signal_group,
    stop_groups,
    wait_for_port,
)
from models.migrate import upgrade
from models.presence import ready_workers
from models.tables import Job, utcnow

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("SVDQ_CHAOS_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MODEL = "tiny"
TERMINAL = {"succeeded", "failed", "canceled"}
EXPECTED_OBJECTS = ["poster.jpg", "video.mp4"]

# Reliability timings for every process of the stack. Chosen so that a run of 200 jobs with 10 kills, 3 wipes
# and a SIGTERM recovers fast and never fails an innocent job:
# - LEASE_S=3 (renewed every 0.75 s): a killed worker's job is back in the queue within lease + one
#   maintenance pass, about 4 s. Not shorter: on 2 busy cores a live worker's renewal must never miss a
#   whole lease, or the reaper would take the job from a healthy worker (it shows up below as "leases taken
#   from live workers").
# - MAINTENANCE_INTERVAL_S=1, RECONCILE_AFTER_S=2: after Redis restarts empty, queued jobs are sent again
#   within about 3 s.
# - SHUTDOWN_GRACE_S=2: longer than a tiny render here (about 1-2 s), so a SIGTERMed worker usually finishes
#   its job and exits; when it does not, the job is handed back after 2 s.
# - MAX_ATTEMPTS=5: only a SIGKILL or the SIGTERM of the worker rendering a job charges that job an extra
#   attempt (a Redis wipe does not: running jobs keep their lease, queued ones are re-sent unclaimed). The
#   11 such faults land on the job being rendered by a randomly chosen worker, and a requeued job goes to the
#   back of a queue of up to 200, so one job being hit four times over is already far-fetched; five attempts
#   leave room for that and for one false reap, while a real poison job would still end worker_lost.
TIMINGS = {"SVDQ_LEASE_S": "3", "SVDQ_MAINTENANCE_INTERVAL_S": "1", "SVDQ_RECONCILE_AFTER_S": "2",
           "SVDQ_SHUTDOWN_GRACE_S": "2", "SVDQ_MAX_ATTEMPTS": "5"}
PARAMS: dict[str, Any] = {"num_inference_steps": 3, "num_frames": 4}
SUCCEEDED_RE = re.compile(r"job (job_\w+) succeeded")
CLAIMED_RE = re.compile(r"job (job_\w+) claimed by")
TAKEN_RE = re.compile(r"job (job_\w+) (?:was taken from this worker)")
HANDED_BACK_RE = re.compile(r"job (job_\w+) handed back")


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------------------------------------



@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started: float = field(default_factory=time.monotonic)
    stopping_since: float | None = None  # SIGTERM sent: shutting down, not a kill victim any more
    exit_seen: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Procs:
    logdir: Path
    all: list[Proc] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        path = self.logdir / f"{name}.log"
        out = open(path, "ab")  # closed in stop_all()
        # own session, so a Ctrl-C reaches this run first and it stops the children itself
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent)
        p = Proc(name=name, proc=proc, log_path=path, log_file=out)
        self.all.append(p)
        return p

    @staticmethod
    def signal(p: Proc, sig: int) -> None:
        signal_group(p.proc, sig)

    def stop(self, p: Proc, grace: float = 15.0) -> None:
        exited = not p.alive()
        stop_groups([p.proc], grace)
        if exited:  # it exited, but its children (if any) share its process group
            self.signal(p, signal.SIGKILL)
        p.log_file.close()

    def stop_all(self) -> None:
        stop_groups([p.proc for p in reversed(self.all)], grace=20)
        for p in self.all:
            self.signal(p, signal.SIGKILL)
            p.log_file.close()
        self.all.clear()


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# --- the stack -----------------------------------------------------------------------------------------------



@dataclass
class Stack:
    tmp: Path
    procs: Procs
    env: dict[str, str]
    db_url: str
    engine: Engine
    redis_port: int
    redis: Proc
    api_url: str
    api_key: str
    storage: Path
    workers: list[Proc] = field(default_factory=list)
    hooks: WebhookReceiver = field(default_factory=lambda: WebhookReceiver())

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start_redis(self) -> Proc:
        return start_redis(self.procs, self.redis_port)

    def start_worker(self) -> Proc:
        p = self.procs.start(f"worker-{len(self.workers)}",
                             [sys.executable, "-m", "client.cli", "worker", "--model", MODEL], self.env)
        self.workers.append(p)
        log(f"started {p.name} (pid {p.pid})")
        return p

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive() and w.stopping_since is None]


class WebhookReceiver:
    """A local endpoint for every job's webhook: records each delivery's webhook-id per job, and answers
    500 to the first delivery of every 7th job, so retries (with the same id) are part of the run."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.ids: dict[str, set[str]] = {}
        self.deliveries = 0
        self.refused = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                job_id = body["data"]["id"]
                with outer._lock:
                    outer.deliveries += 1
                    first = job_id not in outer.ids
                    fail = first and int(hashlib.sha256(job_id.encode()).hexdigest(), 16) % 7 == 0
                    if fail:
                        outer.refused += 1
                        outer.ids.setdefault(job_id, set())
                    else:
                        outer.ids.setdefault(job_id, set()).add(self.headers["webhook-id"])
                self.send_response(500 if fail else 204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_all(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(not self.ids.get(i) for i in ids):
            time.sleep(0.2)


def start_redis(procs: Procs, port: int) -> Proc:
    p = procs.start("redis", redis_server_cmd(port))
    if not wait_for_port(port, 15):
        raise RuntimeError(f"redis-server did not start on port {port}: {tail(p.log_path)}")
    return p


def start_stack(tmp: Path, procs: Procs, db: ScratchDatabase, cache_dir: Path, workers: int) -> Stack:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed")
    from models.tiny import ensure_tiny

    log(f"building the tiny model into {cache_dir} (once)")
    ensure_tiny(cache_dir)  # up front, so the workers (and their replacements) only load it

    db.create()
    log(f"created database {db.name}; migrating")
    upgrade(db.url)
    storage = tmp / "results"
    storage.mkdir()
    api_key = "svdq_chaos_" + secrets.token_urlsafe(24)
    rport = free_port()
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "SVDQ_ENV": "dev", "SVDQ_DATABASE_URL": db.url,
        "SVDQ_REDIS_URL": f"redis://127.0.0.1:{rport}/0", "SVDQ_STORAGE_URL": f"file://{storage}",
        "SVDQ_BOOTSTRAP_API_KEY": api_key, "SVDQ_CACHE_DIR": str(cache_dir), "SVDQ_DEVICE": "cpu", **TIMINGS,
        # the run's own webhook receiver listens on loopback
        "SVDQ_ALLOW_PRIVATE_URLS": "true", "SVDQ_WEBHOOK_BACKOFF_S": "0.5",
        "SVDQ_RATE_LIMIT_PER_S": "0",  # a load generator, not a rate-limit test
    }
    env.pop("SVDQ_MODEL_TINY", None)
    # several workers share few cores: one intra-op thread each avoids OpenMP threads spinning against
    # each other (a deployment knob, not a change to the system under test); the caller's choice wins
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)

    redis_proc = start_redis(procs, rport)
    aport = free_port()
    api = procs.start("api", [sys.executable, "-m", "client.cli", "api", "--host", "127.0.0.1", "--port",
                              str(aport)], env)
    engine = create_engine(db.url, pool_pre_ping=True)
    stack = Stack(tmp=tmp, procs=procs, env=env, db_url=db.url, engine=engine, redis_port=rport, redis=redis_proc,
                  api_url=f"http://127.0.0.1:{aport}", api_key=api_key, storage=storage)
    for _ in range(workers):
        stack.start_worker()
    deadline = time.monotonic() + 120
    while True:
        if not api.alive():
            raise RuntimeError(f"the API exited with {api.proc.returncode}: {tail(api.log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{stack.api_url}/readyz", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API did not become ready: {tail(api.log_path)}")
        time.sleep(0.2)
    log(f"API ready at {stack.api_url}, redis at {stack.redis_url}")
    wait_workers_ready(stack, timeout=300)
    return stack


def wait_workers_ready(stack: Stack, timeout: float) -> None:
    r = redis_lib.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for w in stack.workers:
                if not w.alive():
                    raise RuntimeError(f"{w.name} exited with {w.proc.returncode}: {tail(w.log_path)}")
            names = " ".join(str(x.get("name")) for x in ready_workers(r, MODEL))
            if all(f"w{w.pid}@" in names for w in stack.workers):
                time.sleep(1.0)  # the heartbeat comes just before Celery starts consuming
                log(f"{len(stack.workers)} workers ready")
                return
            time.sleep(0.3)
    finally:
        r.close()
    raise RuntimeError(f"the workers did not become ready in {timeout:.0f} s")


def sample_png(width: int = 128, height: int = 64) -> bytes:
    img = Image.new("RGB", (width, height), (200, 60, 30))
    for x in range(0, width, 16):
        img.paste((20, 20, 200), (x, 0, x + 8, height))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def submit_jobs(stack: Stack, n: int, seed_base: int) -> list[str]:
    with httpx.Client(base_url=stack.api_url, headers=stack.headers, timeout=30) as client:
        r = client.post("/v1/images", files={"image": ("chaos.png", sample_png(), "image/png")})
        if r.status_code != 201:
            raise RuntimeError(f"image upload failed: {r.status_code} {r.text}")
        image_id = r.json()["id"]
        ids: list[str] = []
        for i in range(n):
            # a distinct seed per job and reuse off: every job is rendered, none finished from another's result
            body = {"model": MODEL, "image_id": image_id, "params": {**PARAMS, "seed": seed_base + i},
                    "reuse": False, "webhook_url": stack.hooks.url}
            r = client.post("/v1/jobs", json=body)
            if r.status_code != 202:
                raise RuntimeError(f"job {i} was refused: {r.status_code} {r.text}")
            ids.append(r.json()["id"])
    log(f"submitted {n} jobs")
    return ids


# --- faults --------------------------------------------------------------------------------------------------


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


def running_holders(stack: Stack) -> dict[int, str]:
    """pid of each live worker now rendering a job -> that job's id."""
    with stack.engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.worker).where(Job.status == "running")).all()
    out: dict[int, str] = {}
    for w in stack.live_workers():
        for job_id, worker in rows:
            if worker and f"w{w.pid}@" in worker:
                out[w.pid] = job_id
    return out


def pick_victim(stack: Stack, rng: random.Random, wait_s: float = 15.0) -> tuple[Proc | None, str | None]:
    """A worker that is rendering a job, waiting a little for one; else any live worker."""
    deadline = time.monotonic() + wait_s
    while True:
        holders = running_holders(stack)
        if holders:
            pid = rng.choice(sorted(holders))
            return next(w for w in stack.workers if w.pid == pid), holders[pid]
        if time.monotonic() > deadline:
            live = stack.live_workers()
            return (rng.choice(live), None) if live else (None, None)
        time.sleep(0.2)


def do_kill(stack: Stack, ev: Event, rng: random.Random) -> bool:
    victim, job_id = pick_victim(stack, rng)
    if victim is None:
        return False
    stack.procs.signal(victim, signal.SIGKILL)
    victim.proc.wait(10)
    victim.exit_seen = True
    repl = stack.start_worker()
    ev.detail = {"worker": victim.name, "pid": victim.pid, "job": job_id, "replacement": repl.name}
    log(f"SIGKILLed {victim.name} (pid {victim.pid}) rendering {job_id or 'nothing'}; {repl.name} replaces it")
    return True


def do_wipe(stack: Stack, ev: Event) -> bool:
    run_id_before = redis_run_id(stack)
    old = stack.redis
    stack.procs.signal(old, signal.SIGKILL)
    old.proc.wait(10)
    stack.redis = stack.start_redis()
    run_id_after = redis_run_id(stack)
    ev.detail = {"old_pid": old.pid, "new_pid": stack.redis.pid, "run_id_before": run_id_before,
                 "run_id_after": run_id_after}
    log(f"restarted redis-server empty on port {stack.redis_port} (pid {old.pid} -> {stack.redis.pid})")
    return run_id_before != run_id_after


def do_sigterm(stack: Stack, ev: Event, rng: random.Random) -> bool:
    victim, job_id = pick_victim(stack, rng)
    if victim is None:
        return False
    victim.proc.send_signal(signal.SIGTERM)  # the worker process itself, as an orchestrator's stop does
    victim.stopping_since = time.monotonic()
    repl = stack.start_worker()
    ev.detail = {"worker": victim.name, "pid": victim.pid, "job": job_id, "replacement": repl.name}
    log(f"SIGTERMed {victim.name} (pid {victim.pid}) rendering {job_id or 'nothing'}; {repl.name} replaces it")
    return True


def do_event(stack: Stack, ev: Event, rng: random.Random) -> bool:
    if ev.kind == "kill":
        return do_kill(stack, ev, rng)
    if ev.kind == "wipe":
        return do_wipe(stack, ev)
    return do_sigterm(stack, ev, rng)


def redis_run_id(stack: Stack) -> str | None:
    with contextlib.suppress(Exception):
        r = redis_lib.Redis.from_url(stack.redis_url, socket_timeout=3)
        try:
            return str(r.info("server")["run_id"])
        finally:
            r.close()
    return None


# --- the run -------------------------------------------------------------------------------------------------


@dataclass
class Options:
    jobs: int
    kills: int
    wipes: int
    sigterms: int
    workers: int
    deadline: float
    seed: int


@dataclass
class JobRow:
    id: str
    status: str
    error_code: str | None
    attempts: int
    worker: str | None
    lease_expired: bool


def job_rows(stack: Stack, ids: list[str]) -> dict[str, JobRow]:
    now = utcnow()
    with stack.engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.status, Job.error_code, Job.attempts, Job.worker,
                                   Job.lease_expires_at).where(Job.id.in_(ids))).all()
    out = {}
    for r in rows:
        lease = r.lease_expires_at
        if lease is not None and lease.tzinfo is None:
            lease = lease.replace(tzinfo=dt.UTC)
        out[r.id] = JobRow(r.id, r.status, r.error_code, r.attempts, r.worker,
                           lease is None or lease < now)
    return out


def ended_count(stack: Stack, ids: list[str]) -> int:
    with stack.engine.connect() as conn:
        n = conn.scalar(select(func.count()).select_from(Job).where(Job.id.in_(ids), Job.status.in_(TERMINAL)))
    return int(n or 0)


def chaos(stack: Stack, ids: list[str], opt: Options, rng: random.Random, t0: float) -> list[Event]:
    events = schedule(opt.kills, opt.wipes, opt.sigterms, rng)
    pending = list(events)
    done: list[Event] = []
    deadline = t0 + opt.deadline
    last_report = 0.0
    while time.monotonic() < deadline:
        try:
            ended = ended_count(stack, ids)
        except Exception as exc:  # noqa: BLE001 - the database blinked; look again
            log(f"could not read job states: {exc}")
            time.sleep(1)
            continue
        if ended >= len(ids):
            break
        if pending and ended >= pending[0].at_fraction * len(ids):
            ev = pending.pop(0)
            ok = do_event(stack, ev, rng)
            if ok:
                ev.done_at_s, ev.ended_jobs = round(time.monotonic() - t0, 1), ended
                done.append(ev)
            else:
                log(f"could not do {ev.kind}: no live worker")
        for w in stack.workers:  # a worker that died by itself is reported and replaced
            if not w.alive() and not w.exit_seen:
                w.exit_seen = True
                if w.stopping_since is not None:
                    log(f"{w.name} stopped after SIGTERM with {w.proc.returncode} in "
                        f"{time.monotonic() - w.stopping_since:.1f} s")
                else:
                    log(f"{w.name} exited by itself with {w.proc.returncode}; starting a replacement")
                    stack.start_worker()
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            log(f"{ended}/{len(ids)} jobs ended, {len(done)}/{len(events)} faults done")
        time.sleep(0.3)
    for ev in pending:
        log(f"not done before the jobs ended: {ev.kind} at {ev.at_fraction:.0%}")
    return done


def log_stats(stack: Stack) -> dict[str, Any]:
    succeeded: Counter[str] = Counter()
    claimed: Counter[str] = Counter()
    taken: Counter[str] = Counter()
    handed_back: Counter[str] = Counter()
    for w in stack.workers:
        for line in w.log_path.read_text(errors="replace").splitlines():
            for regex, counter in ((SUCCEEDED_RE, succeeded), (CLAIMED_RE, claimed), (TAKEN_RE, taken),
                                   (HANDED_BACK_RE, handed_back)):
                m = regex.search(line)
                if m:
                    counter[m.group(1)] += 1
    return {"succeeded": succeeded, "claimed": claimed, "taken": taken, "handed_back": handed_back}


def history(stack: Stack, job_id: str, limit: int = 40) -> list[str]:
    lines = []
    for w in stack.workers:
        for line in w.log_path.read_text(errors="replace").splitlines():
            if job_id in line:
                lines.append(f"{w.name} (pid {w.pid}): {line.strip()}")
    return sorted(lines, key=lambda s: s.split(": ", 1)[1])[:limit]


def result_objects(stack: Stack, job_id: str) -> list[str]:
    d = stack.storage / "jobs" / job_id
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []



@dataclass
class Report:
    date: str
    machine: str
    options: dict[str, Any]
    timings: dict[str, str]
    database: str
    wall_s: float
    submitted: int
    succeeded: int
    failed: dict[str, int]
    lost: list[str]
    stuck: list[str]
    still_running: list[str]
    duplicates: dict[str, int]
    objects_max: int
    objects_min: int
    objects_wrong: dict[str, list[str]]
    webhook_ids_max: int
    webhook_ids_min: int
    webhook_missing: list[str]
    webhook_deliveries: int
    webhook_refused: int
    kills: int
    kills_mid_render: int
    wipes: int
    sigterms: int
    sigterm_outcome: str
    retried: int
    max_attempts_used: int
    taken_from_live: int
    handed_back: int
    workers_started: int
    unexpected_exits: int
    events: list[dict[str, Any]]
    processes: list[dict[str, Any]]  # every process this run started: name, pid, exit status
    histories: dict[str, list[str]]
    passed: bool = False
    reasons: list[str] = field(default_factory=list)


def build_report(stack: Stack, ids: list[str], opt: Options, events: list[Event], when: dt.datetime,
                 wall_s: float, db_name: str, started: list[Proc]) -> Report:
    rows = job_rows(stack, ids)
    stats = log_stats(stack)
    missing = [i for i in ids if i not in rows]
    statuses = Counter(r.status for r in rows.values())
    failed = Counter(f"{r.status}:{r.error_code}" for r in rows.values() if r.status in ("failed", "canceled"))
    lost = sorted([r.id for r in rows.values() if r.status == "queued"] + missing)
    stuck = sorted(r.id for r in rows.values() if r.status == "running" and r.lease_expired)
    still = sorted(r.id for r in rows.values() if r.status == "running" and not r.lease_expired)
    dup = {j: n for j, n in stats["succeeded"].items() if n > 1 and j in rows}
    objects = {i: result_objects(stack, i) for i in ids}
    counts = [len(v) for v in objects.values()] or [0]
    wrong = {i: v for i, v in objects.items() if v != EXPECTED_OBJECTS}
    kills = [e for e in events if e.kind == "kill"]
    sigterms = [e for e in events if e.kind == "sigterm"]
    hook_counts = [len(stack.hooks.ids.get(i, set())) for i in ids] or [0]
    outcome = "—"
    if sigterms:
        parts = []
        for e in sigterms:
            w = next(p for p in stack.workers if p.pid == e.detail["pid"])
            code = w.proc.poll()
            job = e.detail.get("job")
            fate = ("its job was handed back" if job and stats["handed_back"][job] else
                    "it finished its job first" if job and stats["succeeded"][job] and any(
                        f"job {job} succeeded" in line for line in w.log_path.read_text(errors="replace").splitlines())
                    else "no job" if not job else "its job ended elsewhere")
            parts.append(f"exit {code}, {fate}")
        outcome = "; ".join(parts)
    histories = {}
    bad = sorted(set(lost) | set(stuck) | set(still) | set(dup) | set(wrong)
                 | {r.id for r in rows.values() if r.status in ("failed", "canceled")})
    for job_id in bad[:10]:
        histories[job_id] = history(stack, job_id)
    unexpected = sum(1 for w in stack.workers if w.exit_seen and w.stopping_since is None
                     and w.pid not in {e.detail.get("pid") for e in kills})
    rep = Report(
        date=when.strftime("%Y-%m-%d %H:%M UTC"),
        machine=(f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu_model()}, "
                 f"{platform.system()} {platform.release()}"),
        options=asdict(opt), timings=dict(TIMINGS), database=db_name, wall_s=round(wall_s, 1),
        submitted=len(ids), succeeded=statuses.get("succeeded", 0), failed=dict(failed), lost=lost, stuck=stuck,
        still_running=still, duplicates=dup, objects_max=max(counts), objects_min=min(counts),
        objects_wrong=wrong, webhook_ids_max=max(hook_counts), webhook_ids_min=min(hook_counts),
        webhook_missing=sorted(i for i in ids if not stack.hooks.ids.get(i)),
        webhook_deliveries=stack.hooks.deliveries, webhook_refused=stack.hooks.refused,
        kills=len(kills), kills_mid_render=sum(1 for e in kills if e.detail.get("job")),
        wipes=sum(1 for e in events if e.kind == "wipe"), sigterms=len(sigterms), sigterm_outcome=outcome,
        retried=sum(1 for r in rows.values() if r.attempts > 1),
        max_attempts_used=max((r.attempts for r in rows.values()), default=0),
        taken_from_live=sum(stats["taken"].values()), handed_back=sum(stats["handed_back"].values()),
        workers_started=len(stack.workers), unexpected_exits=unexpected,
        events=[{"kind": e.kind, "at_fraction": round(e.at_fraction, 3), "at_s": e.done_at_s,
                 "jobs_ended": e.ended_jobs, **e.detail} for e in events],
        processes=[{"name": p.name, "pid": p.pid, "returncode": p.proc.poll()} for p in started],
        histories=histories,
    )
    checks = [
        (rep.succeeded == rep.submitted, f"{rep.submitted - rep.succeeded} of {rep.submitted} jobs did not succeed"),
        (not lost, f"{len(lost)} jobs lost"),
        (not stuck, f"{len(stuck)} jobs stuck"),
        (not still, f"{len(still)} jobs still running at the deadline"),
        (not dup, f"{len(dup)} jobs rendered to completion more than once"),
        (not wrong, f"{len(wrong)} jobs without exactly {', '.join(EXPECTED_OBJECTS)}"),
        (max(hook_counts) == 1 == min(hook_counts), "not exactly one webhook event id per job"),
        (rep.kills == opt.kills, f"{rep.kills} of {opt.kills} kills done"),
        (rep.wipes == opt.wipes, f"{rep.wipes} of {opt.wipes} Redis wipes done"),
        (rep.sigterms == opt.sigterms, f"{rep.sigterms} of {opt.sigterms} SIGTERMs done"),
    ]
    rep.reasons = [why for ok, why in checks if not ok]
    rep.passed = not rep.reasons
    return rep


def yes(ok: bool) -> str:
    return "yes" if ok else "no"


def render(rep: Report) -> str:
    failed_total = sum(rep.failed.values())
    failed = str(failed_total) + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(rep.failed.items())) + ")"
                                  if rep.failed else "")
    objects = f"max {rep.objects_max}, min {rep.objects_min}" + (
        f"; {len(rep.objects_wrong)} jobs differ: " + ", ".join(f"{k} {v}" for k, v in
                                                                 list(rep.objects_wrong.items())[:5])
        if rep.objects_wrong else "")
    o = rep.options
    rows = [
        ("jobs submitted", str(rep.submitted), "—", "—"),
        ("succeeded", str(rep.succeeded), str(rep.submitted), yes(rep.succeeded == rep.submitted)),
        ("failed (by error code)", failed, "0", yes(failed_total == 0)),
        ("lost (never ended: still queued at the end)", str(len(rep.lost)), "0", yes(not rep.lost)),
        ("stuck (running, lease expired at the end)", str(len(rep.stuck)), "0", yes(not rep.stuck)),
        ("still running with a live lease at the deadline", str(len(rep.still_running)), "0",
         yes(not rep.still_running)),
        ("jobs rendered to completion more than once", str(len(rep.duplicates)), "0", yes(not rep.duplicates)),
        ("result objects per job", objects, "exactly 2 (video.mp4, poster.jpg)", yes(not rep.objects_wrong)),
        ("webhook event ids per job", f"max {rep.webhook_ids_max}, min {rep.webhook_ids_min}"
         + (f"; no delivery for {len(rep.webhook_missing)} jobs" if rep.webhook_missing else ""),
         "exactly 1", yes(rep.webhook_ids_max == 1 == rep.webhook_ids_min)),
        ("webhook deliveries received (first tries refused with 500 on purpose)",
         f"{rep.webhook_deliveries} ({rep.webhook_refused} refused)", "—", "—"),
        ("workers SIGKILLed", f"{rep.kills} ({rep.kills_mid_render} mid-render)", str(o["kills"]),
         yes(rep.kills == o["kills"])),
        ("Redis restarted with its data wiped", str(rep.wipes), str(o["wipes"]), yes(rep.wipes == o["wipes"])),
        ("workers SIGTERMed", f"{rep.sigterms} ({rep.sigterm_outcome})", str(o["sigterms"]),
         yes(rep.sigterms == o["sigterms"])),
        ("jobs that needed more than one attempt", f"{rep.retried} (most attempts: {rep.max_attempts_used})",
         "—", "—"),
        ("leases taken from live workers", str(rep.taken_from_live), "—", "—"),
        ("jobs handed back on shutdown", str(rep.handed_back), "—", "—"),
        ("worker processes started (with replacements)", str(rep.workers_started), "—", "—"),
        ("workers that exited by themselves", str(rep.unexpected_exits), "—", "—"),
        ("total wall time (s)", f"{rep.wall_s:.1f}", "—", "—"),
    ]
    lines = [
        f"svdq chaos run, {rep.date}",
        f"machine: {rep.machine}",
        "options: " + ", ".join(f"{k}={v}" for k, v in o.items()),
        "timings: " + ", ".join(f"{k}={v}" for k, v in rep.timings.items()) + f"; params {json.dumps(PARAMS)}",
        "",
        "| metric | value | target | met |",
        "|---|---|---|---|",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
    ]
    for job_id, hist in rep.histories.items():
        lines.append(f"history of {job_id}:")
        lines += [f"    {h}" for h in hist] or ["    (no worker log line names it)"]
    lines.append("PASS" if rep.passed else "FAIL: " + "; ".join(rep.reasons))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
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
    procs = Procs(tmp)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    db = ScratchDatabase(admin, PG_ADMIN_URL, "svdq_chaos")
    stack: Stack | None = None
    code = 2
    keep = args.keep_logs
    try:
        stack = start_stack(tmp, procs, db, args.cache_dir.resolve(), opt.workers)
        code = 1
        t0 = time.monotonic()
        ids = submit_jobs(stack, opt.jobs, seed_base=rng.randrange(2**31))
        events = chaos(stack, ids, opt, rng, t0)
        stack.hooks.wait_all(ids, timeout=90)  # deliveries retry with backoff after the last job ends
        for w in stack.workers:  # the SIGTERMed worker gets its grace to stop before the counts are taken
            if w.stopping_since is not None and w.alive():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(max(0.1, 30 - (time.monotonic() - w.stopping_since)))
        wall_s = time.monotonic() - t_start
        # stop the workers before reading their logs, so every line is written
        started = list(procs.all)
        procs.stop_all()
        rep = build_report(stack, ids, opt, events, when, wall_s, db.name, started)
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
                log(f"--- {p.name} log tail ---\n{tail(p.log_path)}")
        return code
    finally:
        with no_interrupts():
            procs.stop_all()
            if stack is not None:
                stack.engine.dispose()
            try:
                if db.created:
                    db.drop()
                    log(f"dropped database {db.name}")
            except Exception as exc:  # noqa: BLE001 - report it, and keep cleaning up
                log(f"could not drop database {db.name}: {exc}")
            admin.dispose()
            if keep or code != 0:
                log(f"logs kept in {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
