"""Row 4's queue: N queued jobs put in at once (one INSERT ... SELECT into the jobs table, the same ids in the
Redis queue index, as N submissions would leave them), and the latency probe run before and after."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis as redis_lib
from sqlalchemy import create_engine, text

from models.events import queue_key, queue_score
from models.keys import key_prefix
from ops.bench.lifecycle.load import Failures, sequential
from ops.bench.lifecycle.plan import QUEUE_MODEL, SVD_PARAMS
from ops.harness.stack import Stack


@dataclass
class QueueProbe:
    submit_ms: list[float]
    get_ms: list[float]
    position: int | None
    job: dict[str, Any]


async def probe_queue(client: httpx.AsyncClient, image_id: str, samples: int, failures: Failures) -> QueueProbe:
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
    engine = create_engine(stack.settings.database_url)
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
