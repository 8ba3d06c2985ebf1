"""The benchmark's four rows, measured against one stack: submit throughput against /healthz, status polling,
end-to-end overhead with a tiny worker, and submit and GET latency behind a deep queue."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable
from typing import Any

import httpx

from ops.bench.lifecycle.deep_queue import bulk_queue, probe_queue
from ops.bench.lifecycle.e2e import end_to_end
from ops.bench.lifecycle.load import Failures, drive, pct
from ops.bench.lifecycle.plan import E2E_MODEL, LOAD_MODEL, SVD_PARAMS, Options, log
from ops.bench.lifecycle.report import Row, at_least, at_most
from ops.harness.images import sample_png
from ops.harness.stack import Stack


async def run_bench(stack: Stack, opt: Options) -> tuple[list[Row], dict[str, Any]]:
    failures = Failures()
    assert stack.api is not None and stack.url is not None
    api_pid = stack.api.pid
    details: dict[str, Any] = {}
    rows: list[Row] = []

    def new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=stack.url, headers=stack.headers, timeout=httpx.Timeout(30.0),
                                 limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))

    # one client, one connection, per load loop: like independent callers. (One AsyncClient with hundreds of
    # pooled connections costs this process several times more CPU per request and skews every number.)
    async with contextlib.AsyncExitStack() as clients_stack:
        client = await clients_stack.enter_async_context(new_client())
        loops = [await clients_stack.enter_async_context(new_client())
                 for _ in range(max(opt.concurrency, opt.pollers))]
        r = await client.post("/v1/images", files={"image": ("bench.png", sample_png(320, 192), "image/png")})
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
            await drive(api_pid, req, expect, workers=opt.concurrency, seconds=opt.warmup, failures=failures)
        health = await drive(api_pid, healthz, 200, workers=opt.concurrency, seconds=opt.load_seconds,
                             failures=failures)
        subs = await drive(api_pid, submit, 202, workers=opt.concurrency, seconds=opt.load_seconds,
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

        await drive(api_pid, status, 200, workers=opt.pollers, seconds=opt.warmup, failures=failures,
                    interval=opt.poll_interval)
        polls = await drive(api_pid, status, 200, workers=opt.pollers, seconds=opt.poll_seconds, failures=failures,
                            interval=opt.poll_interval)
        flat = await drive(api_pid, status, 200, workers=opt.pollers, seconds=min(opt.poll_seconds, 5.0),
                           failures=failures)
        # the same load as row 1's healthz (its clients, back to back, as long): CPU per request compared like
        # for like, since a process under a steady stream spends less per request than one woken for each
        same = await drive(api_pid, status, 200, workers=opt.concurrency, seconds=opt.load_seconds,
                           failures=failures)
        details["row2"] = {"paced": polls.summary(), "back_to_back": flat.summary(), "like_healthz": same.summary(),
                           "jobs_polled": len(poll_ids), "interval_s": opt.poll_interval}
        get_cpu = 1000 * same.api_cpu_s / max(1, same.ok)
        health_cpu = 1000 * health.api_cpu_s / max(1, health.ok)
        cpu_x = get_cpu / health_cpu if health_cpu else math.nan
        p99 = pct(polls.latencies_ms, 99)
        each = f"{opt.pollers} pollers, 1 per {opt.poll_interval:g} s each"
        rows += [
            Row(f"status poll p50 (ms, {each})", pct(polls.latencies_ms, 50)),
            Row(f"status poll p99 (ms, {each})", p99, "<= 25", at_most(p99, 25.0)),
            Row(f"status poll rate served (req/s, {each})", polls.rps, decimals=0),
            Row(f"API CPU per status GET (ms, {each})", 1000 * polls.api_cpu_s / max(1, polls.ok), decimals=2),
            Row("bench event-loop lag p99 while polling (ms, client-side share of latency)",
                pct(polls.lag_ms, 99)),
            Row(f"status poll throughput (req/s, {opt.pollers} back-to-back)", flat.rps, decimals=0),
            Row(f"status poll p99 (ms, {opt.pollers} back-to-back)", pct(flat.latencies_ms, 99)),
            Row(f"API CPU per status GET (ms, {opt.concurrency} clients back-to-back, as healthz)", get_cpu,
                decimals=2),
            Row("API CPU per status GET / per healthz (same load)", cpu_x, "<= 3", at_most(cpu_x, 3.0), 2),
        ]

        # 3. end-to-end overhead with the tiny model
        failures.row = "row3"
        log("row 3: starting a tiny worker")
        t = time.perf_counter()
        worker = stack.start_worker(E2E_MODEL, wait=False)
        # waited for in a thread, so this event loop (and its idle connections) runs on meanwhile
        await asyncio.to_thread(stack.wait_workers_ready, [worker], E2E_MODEL, 300)
        details["worker_start_s"] = round(time.perf_counter() - t, 1)
        warm_jobs = 1 if opt.quick else 2
        log(f"row 3: {warm_jobs} warm-up + {opt.jobs} tiny jobs, one at a time")
        e2e = await end_to_end(worker, client, image_id, opt.jobs, warm_jobs, failures)
        stack.procs.stop(worker)
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
            Row(f"submit p50 ratio, {depth} / empty", s_ratio, "<= 1.5", at_most(s_ratio, 1.5), 2),
            Row(f"GET queued job p50, empty queue (ms, position {empty.position})", pct(empty.get_ms, 50),
                decimals=2),
            Row(f"GET queued job p50, {depth} (ms, position {deep.position})", pct(deep.get_ms, 50), decimals=2),
            Row(f"GET queued job p50 ratio, {depth} / empty", g_ratio, "<= 1.5", at_most(g_ratio, 1.5), 2),
        ]
    rows.append(Row("failed requests (all rows)", failures.errors, "0", failures.errors == 0, 0))
    details["failures"] = {"count": failures.errors, "by_row": failures.by_row, "first": failures.samples}
    return rows, details
