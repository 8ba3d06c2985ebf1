"""The fleet's clients, in a side process of their own (side.py), over HTTP on the real API: submitters that POST
/v1/jobs at the fleet's capacity (N / render_s jobs per second, open loop: a pacer releases one submission every
1 / rate s and `connections` clients send them), and pollers that GET /v1/jobs/{id} for every job in flight,
`poll_hz` times a second from its submission until the API says it ended, through `connections` clients. Each
client is its own connection (one AsyncClient with hundreds of pooled connections costs this process several times
more CPU per request).

Latencies are from sending a request to its answer. A poll that could not go out on time (every connection busy)
is late: the pollers then serve less than they were asked for, and the report says how much. How late this
process's event loop ran is recorded too: what of a latency is the client's own delay."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import json
import os
import ssl
import sys
import time
from typing import Any

import httpx

from models.status import TERMINAL
from ops.bench.fleet.probes import own_cpu_s
from ops.bench.fleet.samples import Samples
from ops.bench.fleet.side import report
from ops.bench.lifecycle.load import Failures, check, pct


def _client(url: str, headers: dict[str, str], tls: ssl.SSLContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(30.0), verify=tls,
                             limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))


class Clients:
    def __init__(self, url: str, headers: dict[str, str], body: dict[str, Any], *, rate: float, poll_hz: float,
                 submit_connections: int, poll_connections: int, samples: Samples, failures: Failures) -> None:
        self.url, self.headers, self.body, self.rate, self.poll_hz = url, headers, body, rate, poll_hz
        self.submit_connections, self.poll_connections = submit_connections, poll_connections
        self.samples, self.failures = samples, failures
        self.in_flight: set[str] = set()
        self._due: list[tuple[float, str]] = []  # (when, job id): the next poll of each job in flight
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        self._clients = contextlib.AsyncExitStack()
        tls = ssl.create_default_context()  # one for all (the API is plain HTTP): each costs milliseconds to make
        submit = [await self._clients.enter_async_context(_client(self.url, self.headers, tls))
                  for _ in range(self.submit_connections)]
        poll = [await self._clients.enter_async_context(_client(self.url, self.headers, tls))
                for _ in range(self.poll_connections)]
        tokens: asyncio.Queue[float] = asyncio.Queue()
        polls: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._pace(tokens)), asyncio.create_task(self._dispatch(polls)),
                       *(asyncio.create_task(self._submit(c, tokens)) for c in submit),
                       *(asyncio.create_task(self._poll(c, polls)) for c in poll)]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        if tasks:  # bounded: a task that swallowed its cancellation must not hang the run
            await asyncio.wait(tasks, timeout=10)
        clients, self._clients = self._clients, None
        if clients is not None:
            await clients.aclose()

    async def _pace(self, tokens: asyncio.Queue[float]) -> None:
        """One submission every 1 / rate s; past two seconds of backlog, the surplus is dropped (and counted)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += 1 / self.rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.samples.count("submits_due")
            if tokens.qsize() > 2 * self.rate:
                self.samples.count("submits_dropped")
            else:
                tokens.put_nowait(due)

    async def _submit(self, client: httpx.AsyncClient, tokens: asyncio.Queue[float]) -> None:
        while True:
            await tokens.get()
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/jobs", json=self.body)
            except httpx.HTTPError as exc:
                self.failures.fail(f"submit: {exc.__class__.__name__}: {exc}")
                continue
            if check(r, 202, self.failures):
                self.samples.since("submit", t0)
                self.samples.count("submits_ok")
                self._track(r.json()["id"])

    def _track(self, job_id: str) -> None:
        self.in_flight.add(job_id)
        heapq.heappush(self._due, (time.monotonic() + 1 / self.poll_hz, job_id))

    async def _dispatch(self, polls: asyncio.Queue[tuple[float, str]]) -> None:
        """Due polls to the connections, looked for every 10 ms (no poll falls due sooner than it was added)."""
        while True:
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                polls.put_nowait(heapq.heappop(self._due))
            await asyncio.sleep(min(0.01, self._due[0][0] - now) if self._due else 0.01)

    async def _poll(self, client: httpx.AsyncClient, polls: asyncio.Queue[tuple[float, str]]) -> None:
        while True:
            due, job_id = await polls.get()
            self.samples.ms("poll_late", 1000 * max(0.0, time.monotonic() - due))
            t0 = time.perf_counter()
            try:
                r = await client.get(f"/v1/jobs/{job_id}")
            except httpx.HTTPError as exc:
                self.failures.fail(f"poll: {exc.__class__.__name__}: {exc}")
                r = None
            if r is not None and check(r, 200, self.failures):
                self.samples.since("status_get", t0)
                self.samples.count("polls_ok")
                if r.json()["status"] in TERMINAL:
                    self.in_flight.discard(job_id)
                    continue
            # a client polling on a 1 Hz clock: the next poll one period after this one was due (now, if that passed)
            heapq.heappush(self._due, (max(due + 1 / self.poll_hz, time.monotonic()), job_id))


async def _watch(samples: Samples, clients: Clients, lags: list[float]) -> None:
    """How late this process's event loop runs (every 10 ms), and the jobs in flight (every 100 ms)."""
    tick = 0
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        if samples.on:
            lags.append(1000 * (time.perf_counter() - t - 0.01))
        tick += 1
        if tick % 10 == 0:
            samples.gauge("in_flight", len(clients.in_flight))


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    samples, failures, lags = Samples(), Failures(), list[float]()
    headers = {"Authorization": f"Bearer {os.environ['SVDQ_FLEET_API_KEY']}"}
    clients = Clients(spec["url"], headers, spec["body"], rate=spec["rate"], poll_hz=spec["poll_hz"],
                      submit_connections=spec["submit_connections"], poll_connections=spec["poll_connections"],
                      samples=samples, failures=failures)
    await clients.start()
    watch = asyncio.create_task(_watch(samples, clients, lags))
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    cpu0 = cpu1 = 0.0
    while (word := (await loop.run_in_executor(None, sys.stdin.readline)).strip()) not in ("stop", ""):
        if word == "open":
            cpu0, samples.on = own_cpu_s(), True
        elif word == "close":
            samples.on, cpu1 = False, own_cpu_s()
    watch.cancel()
    await clients.stop()
    return {"ms": {k: samples.ms_by_name.get(k, []) for k in ("submit", "status_get", "poll_late")},
            "counts": samples.counts, "in_flight_mean": samples.mean_gauge("in_flight"),
            "lag_p99_ms": pct(lags, 99), "process_cpu_s": cpu1 - cpu0, "failures": failures.errors,
            "failure_samples": failures.samples}


if __name__ == "__main__":
    report(asyncio.run(run(json.loads(sys.argv[1]))))
