"""Load for the lifecycle benchmark: loops of requests (paced or back to back) with their latencies, the API
process's and this process's CPU, and how late this process's event loop ran; failed requests counted per row;
percentiles."""

from __future__ import annotations

import asyncio
import gc
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from ops.harness.processes import cpu_seconds


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)



@dataclass
class Failures:
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    by_row: dict[str, int] = field(default_factory=dict)
    row: str = "setup"

    def fail(self, what: str) -> None:
        self.errors += 1
        self.by_row[self.row] = self.by_row.get(self.row, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])


def check(r: httpx.Response, expect: int, failures: Failures) -> bool:
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
                "bench_loop_lag_p99_ms": round(pct(self.lag_ms, 99), 2),
                "bench_loop_lag_max_ms": round(max(self.lag_ms, default=math.nan), 2)}


async def drive(api_pid: int, request: Callable[[int], Awaitable[httpx.Response]], expect: int, *,
                workers: int, seconds: float, failures: Failures, interval: float = 0.0,
                on_ok: Callable[[httpx.Response], None] | None = None) -> Load:
    """`workers` loops, each sending one request at a time until `seconds` pass (sleeping `interval`
    between its requests, first at a random offset within it). A ticker records how late this process's
    event loop runs: latency measured here includes that much client-side delay."""
    latencies: list[float] = []
    lags: list[float] = []
    ok = 0
    # what this process holds so far never gets walked by a full collection during the load: one paused this
    # event loop for 15-50 ms, and every request in flight then showed that pause as the server's latency
    gc.collect()
    gc.freeze()
    cpu0, bench0 = cpu_seconds(api_pid), time.process_time()
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
    return Load(ok=ok, seconds=elapsed, latencies_ms=latencies, api_cpu_s=cpu_seconds(api_pid) - cpu0,
                bench_cpu_s=time.process_time() - bench0, lag_ms=lags)


async def sequential(request: Callable[[], Awaitable[httpx.Response]], expect: int, n: int,
                     failures: Failures) -> tuple[list[float], list[httpx.Response]]:
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
