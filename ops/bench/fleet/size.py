"""One fleet size, run: the simulator's share of the fleet started in this process, the canary's share and the
clients in their side processes, a warm-up, the steady window (the probes at its edges and sampling inside it,
every process recording), then the wind-down (the clients stop, no worker takes a new job, the running ones
finish) and the size's numbers (rows.py)."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from models.events import queue_key
from ops.bench.fleet.fleet import Fleet
from ops.bench.fleet.plan import MODEL, Options, log
from ops.bench.fleet.probes import Probe, summarize
from ops.bench.fleet.rows import size_row
from ops.bench.fleet.samples import Samples
from ops.bench.fleet.side import Side
from ops.harness.processes import no_interrupts
from ops.harness.stack import Stack


def _gc_pauses(samples: Samples) -> Callable[[str, dict[str, Any]], None]:
    """A gc callback: how long each collection stopped this process (every thread waits for it)."""
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif samples.on:
            samples.ms(f"gc{info['generation']}", 1000 * (time.perf_counter() - started[0]))

    return on_gc


def _watch_busy(samples: Samples, fleet: Fleet, stop: threading.Event) -> None:
    while not stop.wait(0.1):
        samples.gauge("busy", fleet.busy)


def measure(stack: Stack, probe: Probe, opt: Options, n: int, body: dict[str, Any]) -> dict[str, Any]:
    assert stack.url is not None
    samples = Samples()
    k = min(n, opt.canary_workers)
    rate = n / opt.render_s
    log(f"N={n}: {n - k} simulated workers here, {k} in the canary; submitting {rate:.1f} jobs/s")
    options = {**opt.__dict__, "sizes": list(opt.sizes)}
    fleet = Fleet(stack.settings, n - k, opt, samples)
    canary = Side("ops.bench.fleet.canary", {"options": options, "workers": k}, stack.env, stack.tmp / "canary.log")
    clients = Side("ops.bench.fleet.clients", {
        "url": stack.url, "body": body, "rate": rate, "poll_hz": opt.poll_hz,
        "submit_connections": opt.submit_connections, "poll_connections": opt.poll_connections},
        {**stack.env, "SVDQ_FLEET_API_KEY": stack.api_key}, stack.tmp / "clients.log")
    on_gc, stop_watch = _gc_pauses(samples), threading.Event()
    gc.callbacks.append(on_gc)
    # the heap built so far (modules, the fleet) out of the collector's way: a full collection of it stops every
    # thread of this process, every simulated worker with it, for 100 ms and more
    gc.collect()
    gc.freeze()
    try:
        canary.wait_ready()
        fleet.start()
        clients.wait_ready()
        threading.Thread(target=_watch_busy, args=(samples, fleet, stop_watch), daemon=True).start()
        time.sleep(opt.warmup_s)
        probe.analyze()
        depth0 = int(probe.redis.zcard(queue_key(MODEL)))
        start = probe.edge()
        probe.start_sampling()
        gc.freeze()
        for side in (canary, clients):
            side.send("open")
        samples.on = True
        log(f"N={n}: window open for {opt.window_s:g} s ({fleet.busy} workers busy here, {depth0} queued)")
        time.sleep(opt.window_s)
        samples.on = False
        for side in (canary, clients):
            side.send("close")
        end = probe.edge()
        activity = probe.stop_sampling()
        depth1 = int(probe.redis.zcard(queue_key(MODEL)))
        polled = clients.result()  # the clients stop: nothing new is submitted during the wind-down
        drained = fleet.wind_down(2 * opt.render_s + 10)
        measured = canary.result()
        for error in (fleet.feed.error, measured["feed_error"]):
            if error:
                raise RuntimeError(f"a broker consumer failed: {error}")
    finally:
        with no_interrupts():
            stop_watch.set()
            fleet.stop()
            for side in (canary, clients):
                side.close()
            gc.callbacks.remove(on_gc)
            gc.unfreeze()
    row = size_row(n=n, k=k, opt=opt, main=samples, canary=measured, clients=polled,
                   system=summarize(start, end, activity), depths=(depth0, depth1),
                   errors=fleet.sched.errors + measured["errors"], drained=drained and measured["drained"])
    log(f"N={n}: {row['jobs_per_s']:.2f} jobs/s (capacity {rate:.2f}), claim p99 {row['claim_p99_ms']:.1f} ms "
        f"(in the simulator {row['claim_sim_p99_ms']:.1f}), status GET p99 {row['status_get_p99_ms']:.1f} ms, "
        f"simulator CPU {row['bench_cpu']:.2f} (pid {os.getpid()})")
    return row
