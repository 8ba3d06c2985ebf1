"""Benchmark the job lifecycle around the renderer: the API's submit and status paths, the worker's overhead
around a render, and how both hold up with a deep queue.

One command starts a private stack on loopback (its own redis-server, a throwaway PostgreSQL database, local
file storage in a temp dir, the API as a real uvicorn subprocess, a tiny CPU worker for the end-to-end rows),
measures with an httpx.AsyncClient, prints a Markdown table to stdout, and removes everything it made:

    .venv/bin/python ops/bench/lifecycle.py                 # full counts (a few minutes on 2 cores)
    .venv/bin/python ops/bench/lifecycle.py --quick         # small counts, for the test suite
    .venv/bin/python ops/bench/lifecycle.py --json out.json # also write the numbers as JSON

Rows (targets from the lifecycle issue):
1. submit throughput: POST /v1/jobs req/s as a ratio of GET /healthz req/s, same server, same concurrency
   (model "svd-xt": no worker listens to its queue, so only the API is measured). Target >= 0.30.
2. status polling: GET /v1/jobs/{id} latency with many concurrent pollers, each its own client polling at a
   fixed interval (and the same pollers back-to-back, for the ceiling). Target p99 <= 25 ms.
3. end-to-end overhead, tiny model, one job at a time: (finished_at - created_at) - (render_s + encode_s +
   upload_s). Target p50 <= 30 ms.
4. deep queue (model "svd"): submit p50 and GET p50 of a queued job with N jobs queued (inserted in bulk into
   the jobs table and the Redis queue index, as N submissions would leave them) over the same measured just
   before with the queue empty. Target <= 2x each.

Progress goes to stderr; stdout holds only the report. Nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import io
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import httpx
import redis as redis_lib
from PIL import Image
from sqlalchemy import create_engine, text

from client.procs import (
    ScratchDatabase,
    cpu_model,
    die_with_parent,
    free_port,
    no_interrupts,
    redis_server_cmd,
    stop_groups,
    wait_for_port,
)
from models.events import queue_key, queue_score
from models.keys import key_prefix
from models.migrate import upgrade
from models.presence import ready_workers

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("SVDQ_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TERMINAL = {"succeeded", "failed", "canceled"}
# no worker is started for these models: their jobs stay queued, so rows 1, 2 and 4 measure the API alone
LOAD_MODEL = "svd-xt"  # rows 1 and 2
QUEUE_MODEL = "svd"  # row 4: its queue stays empty until the bulk fill
E2E_MODEL = "tiny"
E2E_PARAMS: dict[str, Any] = {"num_inference_steps": 1, "num_frames": 2}
SVD_PARAMS: dict[str, Any] = {"motion_bucket_id": 127, "noise_aug_strength": 0.02}

# all the load comes from one key: the per-key rate, open-jobs and queue-depth limits are raised so they never
# refuse a request, while their checks still run (and cost what they cost) on every request
NEVER_REFUSE = {"SVDQ_RATE_LIMIT_PER_S": "1000000000", "SVDQ_MAX_OPEN_JOBS_PER_KEY": "1000000000",
                "SVDQ_MAX_QUEUE_DEPTH": "1000000000"}

FULL: dict[str, Any] = {"load_seconds": 10.0, "concurrency": 16, "pollers": 200, "poll_seconds": 10.0,
                        "poll_interval": 1.0, "jobs": 100, "queued": 100_000, "samples": 300, "warmup": 2.0}
QUICK: dict[str, Any] = {"load_seconds": 2.0, "concurrency": 16, "pollers": 20, "poll_seconds": 2.0,
                         "poll_interval": 0.25, "jobs": 5, "queued": 2_000, "samples": 30, "warmup": 0.5}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- statistics ----------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Row:
    metric: str
    value: float
    target: str = "—"
    met: bool | None = None
    decimals: int = 1

    def cells(self) -> list[str]:
        value = "n/a" if not math.isfinite(self.value) else f"{self.value:.{self.decimals}f}"
        met = "—" if self.met is None else ("yes" if self.met else "no")
        return [self.metric, value, self.target, met]


def at_least(value: float, target: float) -> bool:
    return math.isfinite(value) and value >= target


def at_most(value: float, target: float) -> bool:
    return math.isfinite(value) and value <= target


# --- processes -----------------------------------------------------------------------------------------------



@dataclass
class Procs:
    logdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.logdir / f"{name}.log", "wb")  # closed in stop()
        # own session, so a Ctrl-C reaches the benchmark first and it stops the children in order
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent)
        self.procs[name], self.logs[name] = proc, out
        return proc

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, name: str, grace: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        stop_groups([proc], grace)
        self.logs.pop(name).close()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the stack -----------------------------------------------------------------------------------------------


@dataclass
class Stack:
    tmp: Path
    procs: Procs
    env: dict[str, str]
    db_url: str
    redis_url: str
    api_url: str
    api_key: str
    api_pid: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}



def start_stack(tmp: Path, procs: Procs, db: ScratchDatabase, cache_dir: Path) -> Stack:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed")
    rport = free_port()
    procs.start("redis", redis_server_cmd(rport))
    if not wait_for_port(rport, 10):
        raise RuntimeError(f"redis-server did not start: {procs.tail('redis')}")
    redis_url = f"redis://127.0.0.1:{rport}/0"

    db.create()
    log(f"created database {db.name}; migrating")
    upgrade(db.url)

    api_key = "svdq_bench_" + secrets.token_urlsafe(24)
    (tmp / "results").mkdir()
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "SVDQ_ENV": "dev", "SVDQ_DATABASE_URL": db.url,
        "SVDQ_REDIS_URL": redis_url, "SVDQ_STORAGE_URL": f"file://{tmp / 'results'}",
        "SVDQ_BOOTSTRAP_API_KEY": api_key, "SVDQ_CACHE_DIR": str(cache_dir), "SVDQ_DEVICE": "cpu",
        **NEVER_REFUSE,
    }
    env.pop("SVDQ_MODEL_TINY", None)
    aport = free_port()
    api = procs.start("api", [sys.executable, "-m", "client.cli", "api", "--host", "127.0.0.1", "--port", str(aport)],
                      env)
    api_url = f"http://127.0.0.1:{aport}"
    deadline = time.monotonic() + 90
    while True:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with {api.returncode}: {procs.tail('api')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/readyz", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API did not become ready: {procs.tail('api')}")
        time.sleep(0.2)
    log(f"API ready at {api_url} (pid {api.pid}), redis at {redis_url}")
    return Stack(tmp=tmp, procs=procs, env=env, db_url=db.url, redis_url=redis_url, api_url=api_url,
                 api_key=api_key, api_pid=api.pid)


async def start_worker(stack: Stack, timeout: float = 300) -> subprocess.Popen[bytes]:
    proc = stack.procs.start("worker", [sys.executable, "-m", "client.cli", "worker", "--model", E2E_MODEL],
                             stack.env)
    r = redis_lib.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}: {stack.procs.tail('worker')}")
            if any(f"w{proc.pid}@" in str(w.get("name")) for w in ready_workers(r, E2E_MODEL)):
                await asyncio.sleep(1.0)  # the heartbeat comes just before Celery starts consuming
                return proc
            await asyncio.sleep(0.2)
    finally:
        r.close()
    raise RuntimeError(f"the worker did not become ready in {timeout:.0f} s: {stack.procs.tail('worker')}")


def sample_png(width: int = 320, height: int = 192) -> bytes:
    img = Image.new("RGB", (width, height), (200, 60, 30))
    for x in range(0, width, 16):
        img.paste((20, 20, 200), (x, 0, x + 8, height))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- measurements --------------------------------------------------------------------------------------------


@dataclass
class Counter:
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    by_row: dict[str, int] = field(default_factory=dict)
    row: str = "setup"

    def fail(self, what: str) -> None:
        self.errors += 1
        self.by_row[self.row] = self.by_row.get(self.row, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])


def check(r: httpx.Response, expect: int, failures: Counter) -> bool:
    if r.status_code != expect:
        failures.fail(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text}")
        return False
    return True


@dataclass
class Load:
    ok: int
    seconds: float
    latencies_ms: list[float]
    api_cpu_s: float
    bench_cpu_s: float
    lag_ms: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else math.nan

    def summary(self) -> dict[str, float]:
        return {"requests": self.ok, "seconds": round(self.seconds, 3), "rps": round(self.rps, 1),
                "p50_ms": round(pct(self.latencies_ms, 50), 2), "p99_ms": round(pct(self.latencies_ms, 99), 2),
                "api_cpu_ms_per_request": round(1000 * self.api_cpu_s / self.ok, 3) if self.ok else math.nan,
                "api_cpu_busy": round(self.api_cpu_s / self.seconds, 3),
                "bench_cpu_busy": round(self.bench_cpu_s / self.seconds, 3),
                "bench_loop_lag_p50_ms": round(pct(self.lag_ms, 50), 2),
                "bench_loop_lag_p99_ms": round(pct(self.lag_ms, 99), 2)}


async def drive(stack: Stack, request: Callable[[int], Awaitable[httpx.Response]], expect: int, *,
                workers: int, seconds: float, failures: Counter, interval: float = 0.0,
                on_ok: Callable[[httpx.Response], None] | None = None) -> Load:
    """`workers` loops, each sending one request at a time until `seconds` pass (sleeping `interval`
    between its requests, first at a random offset within it). A ticker records how late this process's
    event loop runs: latency measured here includes that much client-side delay."""
    latencies: list[float] = []
    lags: list[float] = []
    ok = 0
    cpu0, bench0 = cpu_seconds(stack.api_pid), time.process_time()
    start = time.perf_counter()
    end = start + seconds

    async def ticker() -> None:
        while time.perf_counter() < end:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(1000 * (time.perf_counter() - t - 0.01))

    async def loop(i: int) -> None:
        nonlocal ok
        if interval:
            await asyncio.sleep(random.uniform(0, interval))
        while time.perf_counter() < end:
            t = time.perf_counter()
            try:
                r = await request(i)
            except httpx.HTTPError as exc:
                failures.fail(f"{exc.__class__.__name__}: {exc}")
                await asyncio.sleep(0.05)
                continue
            if check(r, expect, failures):
                latencies.append(1000 * (time.perf_counter() - t))
                ok += 1
                if on_ok is not None:
                    on_ok(r)
            if interval:
                await asyncio.sleep(interval)

    await asyncio.gather(ticker(), *(loop(i) for i in range(workers)))
    elapsed = time.perf_counter() - start
    return Load(ok=ok, seconds=elapsed, latencies_ms=latencies, api_cpu_s=cpu_seconds(stack.api_pid) - cpu0,
                bench_cpu_s=time.process_time() - bench0, lag_ms=lags)


async def sequential(request: Callable[[], Awaitable[httpx.Response]], expect: int, n: int,
                     failures: Counter) -> tuple[list[float], list[httpx.Response]]:
    latencies: list[float] = []
    responses: list[httpx.Response] = []
    for _ in range(n):
        t = time.perf_counter()
        try:
            r = await request()
        except httpx.HTTPError as exc:
            failures.fail(f"{exc.__class__.__name__}: {exc}")
            continue
        if check(r, expect, failures):
            latencies.append(1000 * (time.perf_counter() - t))
            responses.append(r)
    return latencies, responses


@dataclass
class QueueProbe:
    submit_ms: list[float]
    get_ms: list[float]
    position: int | None
    job: dict[str, Any]


async def probe_queue(client: httpx.AsyncClient, image_id: str, samples: int, failures: Counter) -> QueueProbe:
    """Sequential submit latency, then sequential GET latency of the last job submitted (the back of the queue)."""
    body = {"model": QUEUE_MODEL, "image_id": image_id, "params": SVD_PARAMS}
    warm = max(5, samples // 10)
    await sequential(lambda: client.post("/v1/jobs", json=body), 202, warm, failures)
    submit_ms, responses = await sequential(lambda: client.post("/v1/jobs", json=body), 202, samples, failures)
    if not responses:
        raise RuntimeError(f"no submission succeeded: {failures.samples}")
    job = responses[-1].json()
    path = f"/v1/jobs/{job['id']}"
    await sequential(lambda: client.get(path), 200, warm, failures)
    get_ms, got = await sequential(lambda: client.get(path), 200, samples, failures)
    position = got[-1].json().get("queue_position") if got else None
    return QueueProbe(submit_ms=submit_ms, get_ms=get_ms, position=position, job=job)


def bulk_queue(stack: Stack, *, n: int, image_id: str, template: dict[str, Any]) -> dict[str, Any]:
    """N queued jobs for QUEUE_MODEL, older than every job so far: one INSERT ... SELECT into the jobs table
    and the same ids, with the API's scores, in the Redis queue index."""
    salt = secrets.token_hex(4)
    priority = int(template["priority"])
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    engine = create_engine(stack.db_url)
    started = time.perf_counter()
    try:
        with engine.begin() as conn:
            owner = conn.scalar(text("SELECT id FROM api_keys WHERE prefix = :p"), {"p": key_prefix(stack.api_key)})
            if owner is None:
                raise RuntimeError("the bootstrap API key is not in api_keys")
            conn.execute(text(
                "INSERT INTO jobs (id, owner_id, status, model, image_id, params, output, postprocess, priority, "
                "attempts, progress_step, progress_total, created_at, fingerprint) "
                "SELECT 'job_' || substr(encode(sha256(convert_to(:salt || g::text, 'UTF8')), 'hex'), 1, 24), "
                ":owner, 'queued', :model, :image, CAST(:params AS json), CAST(:output AS json), NULL, :priority, "
                "0, 0, :total, CAST(:t0 AS timestamptz) + g * interval '1 millisecond', "
                "encode(sha256(convert_to(:salt || 'fp' || g::text, 'UTF8')), 'hex') "
                "FROM generate_series(0, :n - 1) AS g"),
                {"salt": salt, "owner": owner, "model": QUEUE_MODEL, "image": image_id,
                 "params": json.dumps(template["params"]), "output": json.dumps(template["output"]),
                 "priority": priority, "total": int(template["params"]["num_inference_steps"]), "t0": t0, "n": n})
        insert_s = time.perf_counter() - started
        started = time.perf_counter()
        # 100k submissions arrive over time, with autovacuum and checkpoints in between; one bulk INSERT leaves
        # unset hint bits and ~100 MB of dirty pages that would slow the first reads and commits after it
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
            conn.execute(text("CHECKPOINT"))
        settle_s = time.perf_counter() - started
        with engine.connect() as conn:
            check_id, check_created = conn.execute(text(
                "SELECT id, created_at FROM jobs WHERE id = 'job_' || "
                "substr(encode(sha256(convert_to(:k, 'UTF8')), 'hex'), 1, 24)"), {"k": f"{salt}{n // 2}"}).one()
    finally:
        engine.dispose()

    def job_id(g: int) -> str:
        return "job_" + hashlib.sha256(f"{salt}{g}".encode()).hexdigest()[:24]

    r = redis_lib.Redis.from_url(stack.redis_url)
    started = time.perf_counter()
    try:
        key = queue_key(QUEUE_MODEL)
        for lo in range(0, n, 5000):
            r.zadd(key, {job_id(g): queue_score(priority, t0 + dt.timedelta(milliseconds=g))
                         for g in range(lo, min(n, lo + 5000))})
        zadd_s = time.perf_counter() - started
        score = r.zscore(key, check_id)
        depth = int(r.zcard(key))
    finally:
        r.close()
    if check_id != job_id(n // 2) or score != queue_score(priority, check_created):
        raise RuntimeError("the bulk-inserted rows and the Redis queue index disagree")
    return {"jobs": n, "insert_s": round(insert_s, 2), "vacuum_checkpoint_s": round(settle_s, 2),
            "zadd_s": round(zadd_s, 2), "redis_queue_depth": depth}


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout: float, poll: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"/v1/jobs/{job_id}")
        if r.status_code == 200 and r.json()["status"] in TERMINAL:
            return dict(r.json())
        await asyncio.sleep(poll)
    raise RuntimeError(f"job {job_id} did not finish in {timeout:.0f} s")


def ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def end_to_end(stack: Stack, client: httpx.AsyncClient, image_id: str, n: int, warmup: int,
                     failures: Counter) -> dict[str, list[float]]:
    body = {"model": E2E_MODEL, "image_id": image_id, "params": E2E_PARAMS}
    out: dict[str, list[float]] = {"overhead_ms": [], "pickup_ms": [], "in_worker_ms": [], "render_ms": [],
                                   "total_ms": []}
    for i in range(warmup + n):
        r = await client.post("/v1/jobs", json=body)
        if not check(r, 202, failures):
            continue
        job = await wait_job(client, r.json()["id"], timeout=180, poll=0.05)
        if job["status"] != "succeeded":
            failures.fail(f"e2e job {job['id']} {job['status']}: {job.get('error')}")
            if job["status"] == "failed" and i == 0:
                raise RuntimeError(f"the first tiny job failed: {job.get('error')}\n{stack.procs.tail('worker')}")
            continue
        if i < warmup:
            continue
        timings = job["runtime"]["timings"]
        work_ms = 1000 * (timings["render_s"] + timings["encode_s"] + timings["upload_s"])
        created, started, finished = ts(job["created_at"]), ts(job["started_at"]), ts(job["finished_at"])
        total_ms = 1000 * (finished - created).total_seconds()
        pickup_ms = 1000 * (started - created).total_seconds()
        out["overhead_ms"].append(total_ms - work_ms)
        out["pickup_ms"].append(pickup_ms)
        out["in_worker_ms"].append(total_ms - pickup_ms - work_ms)
        out["render_ms"].append(1000 * timings["render_s"])
        out["total_ms"].append(total_ms)
    return out


# --- the run -------------------------------------------------------------------------------------------------


@dataclass
class Options:
    load_seconds: float
    concurrency: int
    pollers: int
    poll_seconds: float
    poll_interval: float
    jobs: int
    queued: int
    samples: int
    warmup: float
    quick: bool


async def run_bench(stack: Stack, opt: Options) -> tuple[list[Row], dict[str, Any]]:
    failures = Counter()
    details: dict[str, Any] = {}
    rows: list[Row] = []

    def new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=httpx.Timeout(30.0),
                                 limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))

    # one client, one connection, per load loop: like independent callers. (One AsyncClient with hundreds of
    # pooled connections costs this process several times more CPU per request and skews every number.)
    async with contextlib.AsyncExitStack() as clients_stack:
        client = await clients_stack.enter_async_context(new_client())
        loops = [await clients_stack.enter_async_context(new_client())
                 for _ in range(max(opt.concurrency, opt.pollers))]
        r = await client.post("/v1/images", files={"image": ("bench.png", sample_png(), "image/png")})
        if r.status_code != 201:
            raise RuntimeError(f"image upload failed: {r.status_code} {r.text}")
        image_id = r.json()["id"]

        # 1. submit throughput against /healthz throughput
        failures.row = "row1"
        log(f"row 1: {opt.concurrency} concurrent clients, {opt.load_seconds:g} s per endpoint")
        submit_body = {"model": LOAD_MODEL, "image_id": image_id, "params": SVD_PARAMS}
        poll_ids: list[str] = []

        def keep_id(resp: httpx.Response) -> None:
            if len(poll_ids) < 256:
                poll_ids.append(resp.json()["id"])

        def healthz(i: int) -> Awaitable[httpx.Response]:
            return loops[i].get("/healthz")

        def submit(i: int) -> Awaitable[httpx.Response]:
            return loops[i].post("/v1/jobs", json=submit_body)

        for req, expect in ((healthz, 200), (submit, 202)):  # warm both paths (connections, caches, pools)
            await drive(stack, req, expect, workers=opt.concurrency, seconds=opt.warmup, failures=failures)
        health = await drive(stack, healthz, 200, workers=opt.concurrency, seconds=opt.load_seconds,
                             failures=failures)
        subs = await drive(stack, submit, 202, workers=opt.concurrency, seconds=opt.load_seconds,
                           failures=failures, on_ok=keep_id)
        ratio = subs.rps / health.rps if health.rps else math.nan
        cpu_ratio = (health.api_cpu_s / health.ok) / (subs.api_cpu_s / subs.ok) if health.ok and subs.ok else math.nan
        details["row1"] = {"healthz": health.summary(), "submit": subs.summary()}
        rows += [
            Row("submit / healthz throughput (ratio)", ratio, ">= 0.30", at_least(ratio, 0.30), 2),
            Row(f"GET /healthz throughput (req/s, {opt.concurrency} clients)", health.rps, decimals=0),
            Row(f"POST /v1/jobs throughput (req/s, {opt.concurrency} clients)", subs.rps, decimals=0),
            Row("API CPU per healthz (ms)", 1000 * health.api_cpu_s / max(1, health.ok), decimals=2),
            Row("API CPU per submit (ms)", 1000 * subs.api_cpu_s / max(1, subs.ok), decimals=2),
            # what the ratio is once the API process, not this client, is what runs out of CPU
            Row("submit / healthz ratio from API CPU per request (server-bound estimate)", cpu_ratio, decimals=2),
        ]

        # 2. status polling
        failures.row = "row2"
        log(f"row 2: {opt.pollers} pollers, every {opt.poll_interval:g} s, for {opt.poll_seconds:g} s")
        if not poll_ids:
            raise RuntimeError(f"no job to poll: {failures.samples}")

        def status(i: int) -> Awaitable[httpx.Response]:
            return loops[i].get(f"/v1/jobs/{poll_ids[i % len(poll_ids)]}")

        await drive(stack, status, 200, workers=opt.pollers, seconds=opt.warmup, failures=failures,
                    interval=opt.poll_interval)
        polls = await drive(stack, status, 200, workers=opt.pollers, seconds=opt.poll_seconds, failures=failures,
                            interval=opt.poll_interval)
        flat = await drive(stack, status, 200, workers=opt.pollers, seconds=min(opt.poll_seconds, 5.0),
                           failures=failures)
        details["row2"] = {"paced": polls.summary(), "back_to_back": flat.summary(), "jobs_polled": len(poll_ids),
                           "interval_s": opt.poll_interval}
        p99 = pct(polls.latencies_ms, 99)
        each = f"{opt.pollers} pollers, 1 per {opt.poll_interval:g} s each"
        rows += [
            Row(f"status poll p50 (ms, {each})", pct(polls.latencies_ms, 50)),
            Row(f"status poll p99 (ms, {each})", p99, "<= 25", at_most(p99, 25.0)),
            Row(f"status poll rate served (req/s, {each})", polls.rps, decimals=0),
            Row("API CPU per status GET (ms)", 1000 * polls.api_cpu_s / max(1, polls.ok), decimals=2),
            Row("bench event-loop lag p99 while polling (ms, client-side share of latency)",
                pct(polls.lag_ms, 99)),
            Row(f"status poll throughput (req/s, {opt.pollers} back-to-back)", flat.rps, decimals=0),
            Row(f"status poll p99 (ms, {opt.pollers} back-to-back)", pct(flat.latencies_ms, 99)),
        ]

        # 3. end-to-end overhead with the tiny model
        failures.row = "row3"
        log("row 3: starting a tiny worker")
        t = time.perf_counter()
        await start_worker(stack)
        details["worker_start_s"] = round(time.perf_counter() - t, 1)
        warm_jobs = 1 if opt.quick else 2
        log(f"row 3: {warm_jobs} warm-up + {opt.jobs} tiny jobs, one at a time")
        e2e = await end_to_end(stack, client, image_id, opt.jobs, warm_jobs, failures)
        stack.procs.stop("worker")
        if not e2e["overhead_ms"]:
            raise RuntimeError(f"no tiny job succeeded: {failures.samples}")
        details["row3"] = {k: {"p50": round(pct(v, 50), 2), "p90": round(pct(v, 90), 2), "n": len(v)}
                           for k, v in e2e.items()}
        p50 = pct(e2e["overhead_ms"], 50)
        rows += [
            Row(f"e2e overhead p50 (ms, tiny, {len(e2e['overhead_ms'])} jobs)", p50, "<= 30", at_most(p50, 30.0)),
            Row("e2e overhead p90 (ms)", pct(e2e["overhead_ms"], 90)),
            Row("e2e pickup p50 (ms, created_at -> started_at)", pct(e2e["pickup_ms"], 50)),
            Row("e2e in-worker overhead p50 (ms, started_at -> finished_at less timings)",
                pct(e2e["in_worker_ms"], 50)),
            Row("e2e render_s p50 (ms, for scale)", pct(e2e["render_ms"], 50)),
        ]

        # 4. submit and GET latency with QUEUE_MODEL's queue empty, then (right after, so the machine's state
        # drifts as little as possible in between) behind a deep queue
        failures.row = "row4"
        log(f"row 4: empty-queue baseline ({opt.samples} sequential submits, then GETs)")
        empty = await probe_queue(client, image_id, opt.samples, failures)
        log(f"row 4: queueing {opt.queued:,} jobs in bulk")
        details["row4_fill"] = await asyncio.to_thread(bulk_queue, stack, n=opt.queued, image_id=image_id,
                                                       template=empty.job)
        log(f"row 4: {details['row4_fill']}; probing again")
        deep = await probe_queue(client, image_id, opt.samples, failures)
        details["row4"] = {
            name: {"submit_p50_ms": round(pct(p.submit_ms, 50), 2), "submit_p90_ms": round(pct(p.submit_ms, 90), 2),
                   "get_p50_ms": round(pct(p.get_ms, 50), 2), "get_p90_ms": round(pct(p.get_ms, 90), 2),
                   "queue_position": p.position}
            for name, p in (("empty", empty), ("deep", deep))}
        if deep.position is None or deep.position < opt.queued:
            failures.fail(f"queue_position behind {opt.queued} queued jobs was {deep.position}")
        s_ratio = pct(deep.submit_ms, 50) / pct(empty.submit_ms, 50)
        g_ratio = pct(deep.get_ms, 50) / pct(empty.get_ms, 50)
        depth = f"{opt.queued:,} queued"
        rows += [
            Row("submit p50, empty queue (ms)", pct(empty.submit_ms, 50), decimals=2),
            Row(f"submit p50, {depth} (ms)", pct(deep.submit_ms, 50), decimals=2),
            Row(f"submit p50 ratio, {depth} / empty", s_ratio, "<= 2.0", at_most(s_ratio, 2.0), 2),
            Row(f"GET queued job p50, empty queue (ms, position {empty.position})", pct(empty.get_ms, 50),
                decimals=2),
            Row(f"GET queued job p50, {depth} (ms, position {deep.position})", pct(deep.get_ms, 50), decimals=2),
            Row(f"GET queued job p50 ratio, {depth} / empty", g_ratio, "<= 2.0", at_most(g_ratio, 2.0), 2),
        ]
    rows.append(Row("failed requests (all rows)", failures.errors, "0", failures.errors == 0, 0))
    details["failures"] = {"count": failures.errors, "by_row": failures.by_row, "first": failures.samples}
    return rows, details


# --- the report ----------------------------------------------------------------------------------------------



def versions(redis_url: str | None, db_url: str | None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("svdq", "fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "redis", "celery", "kombu",
                 "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    if git.returncode == 0:
        out["git"] = git.stdout.strip()
    if redis_url:
        with contextlib.suppress(Exception):
            r = redis_lib.Redis.from_url(redis_url)
            out["redis-server"] = str(r.info("server")["redis_version"])
            r.close()
    if db_url:
        with contextlib.suppress(Exception):
            eng = create_engine(db_url)
            with eng.connect() as conn:
                out["postgresql"] = str(conn.scalar(text("SHOW server_version"))).split()[0]
            eng.dispose()
    return out


def render(rows: list[Row], when: dt.datetime, machine: str, vers: dict[str, str], opt: Options,
           details: dict[str, Any]) -> str:
    lines = [
        f"svdq lifecycle benchmark, {when:%Y-%m-%d %H:%M} UTC, {'quick' if opt.quick else 'full'} mode",
        f"machine: {machine}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"options: {', '.join(f'{k}={v}' for k, v in asdict(opt).items())}; "
        f"{', '.join(f'{k}={v}' for k, v in NEVER_REFUSE.items())} (checked, never refusing)",
        "",
        "| metric | value | target | met |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    r1 = details.get("row1", {})
    if r1:
        lines += ["", f"bench process CPU busy during healthz load: {r1['healthz']['bench_cpu_busy']:.2f} cores, "
                      f"API process: {r1['healthz']['api_cpu_busy']:.2f} cores; during submit load: "
                      f"bench {r1['submit']['bench_cpu_busy']:.2f}, API {r1['submit']['api_cpu_busy']:.2f}"]
    if "row4_fill" in details:
        fill = details["row4_fill"]
        lines.append(f"deep queue: {fill['jobs']:,} rows by INSERT ... SELECT in {fill['insert_s']} s, then VACUUM "
                     f"ANALYZE + CHECKPOINT in {fill['vacuum_checkpoint_s']} s, ZADD in {fill['zadd_s']} s (Redis "
                     f"queue index depth {fill['redis_queue_depth']:,}); the broker's message lists were not filled")
    fails = details.get("failures", {})
    if fails.get("count"):
        lines.append(f"failed requests by row: {fails['by_row']}; first: {fails['first'][0][:240]}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small counts (the test suite's mode)")
    p.add_argument("--load-seconds", type=float, help="row 1: seconds of load per endpoint (full 10)")
    p.add_argument("--concurrency", type=int, help="row 1: concurrent clients (16)")
    p.add_argument("--pollers", type=int, help="row 2: concurrent pollers (full 200)")
    p.add_argument("--poll-seconds", type=float, help="row 2: seconds of polling (full 10)")
    p.add_argument("--poll-interval", type=float, help="row 2: seconds each poller waits between polls (full 1)")
    p.add_argument("--jobs", type=int, help="row 3: tiny jobs, one at a time (full 100)")
    p.add_argument("--queued", type=int, help="row 4: jobs queued in bulk (full 100000)")
    p.add_argument("--samples", type=int, help="row 4: sequential requests per latency probe (full 300)")
    p.add_argument("--cache-dir", type=Path, help="where the tiny model is built (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the rows and details here")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the process logs")
    return p.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    base = QUICK if args.quick else FULL
    vals = {k: getattr(args, k) if getattr(args, k, None) is not None else v for k, v in base.items()}
    opt = Options(**vals, quick=args.quick)
    if min(opt.concurrency, opt.pollers, opt.jobs, opt.queued, opt.samples) < 1:
        raise SystemExit("counts must be at least 1")
    return opt


def _terminate(signum: int, _: Any) -> None:
    # SIGTERM takes Ctrl-C's path: asyncio.run cancels the run, then the cleanup in main() runs
    os.kill(os.getpid(), signal.SIGINT)



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opt = options(args)
    os.environ["HF_HUB_OFFLINE"] = "1"
    signal.signal(signal.SIGTERM, _terminate)
    when = dt.datetime.now(dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix="svdq-bench-"))
    procs = Procs(tmp)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    db = ScratchDatabase(admin, PG_ADMIN_URL, "svdq_bench")
    stack: Stack | None = None
    ok = False
    try:
        stack = start_stack(tmp, procs, db, args.cache_dir or tmp / "models")
        rows, details = asyncio.run(run_bench(stack, opt))
        machine = (f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu_model()}, "
                   f"{platform.system()} {platform.release()}")
        vers = versions(stack.redis_url, stack.db_url)
        print(render(rows, when, machine, vers, opt, details), flush=True)
        if args.json:
            args.json.write_text(json.dumps({
                "date": when.isoformat(), "machine": machine, "versions": vers, "options": asdict(opt),
                "database": db.name,
                "rows": [{"metric": r.metric, "value": r.value, "target": r.target, "met": r.met} for r in rows],
                "details": details}, indent=2, default=str) + "\n")
        ok = True
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except Exception as exc:  # noqa: BLE001 - any failure: report it, then clean up
        log(f"failed: {exc.__class__.__name__}: {exc}")
        for name in ("api", "worker"):
            if (tmp / f"{name}.log").exists():
                log(f"--- {name} log tail ---\n{procs.tail(name)}")
        return 1
    finally:
        with no_interrupts():
            procs.stop_all()
            try:
                if db.created:
                    db.drop()
                    log(f"dropped database {db.name}")
            except Exception as exc:  # noqa: BLE001 - report it, and keep cleaning up
                log(f"could not drop database {db.name}: {exc}")
            admin.dispose()
            if args.keep_logs or not ok:
                log(f"logs kept in {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
