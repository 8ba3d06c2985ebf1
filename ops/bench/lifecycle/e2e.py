"""Row 3: tiny jobs one at a time, each timed from its own row: the overhead around render, encode and upload,
the pickup, and the time in the worker outside them."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import httpx

from models.status import TERMINAL
from ops.bench.lifecycle.load import Failures, check
from ops.bench.lifecycle.plan import E2E_MODEL, E2E_PARAMS
from ops.harness.processes import Proc


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


async def end_to_end(worker: Proc, client: httpx.AsyncClient, image_id: str, n: int, warmup: int,
                     failures: Failures) -> dict[str, list[float]]:
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
                raise RuntimeError(f"the first tiny job failed: {job.get('error')}\n{worker.tail()}")
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
