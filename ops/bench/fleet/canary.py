"""A share of the fleet (canary_workers of it) in a side process of its own (side.py), where the simulator's load
does not queue its calls behind the simulator's GIL: its claim, progress and finish latencies are what a worker
on a machine of its own would see (the machine's CPU still shared). Its consumer takes messages from the same
broker queue as the simulator's, competing for them as two real workers' consumers do."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
from typing import Any

from ops.bench.fleet.fleet import Fleet
from ops.bench.fleet.plan import Options
from ops.bench.fleet.probes import own_cpu_s
from ops.bench.fleet.samples import Samples
from ops.bench.fleet.side import commands, report
from ops.harness.stack import settings_of


def run(spec: dict[str, Any]) -> dict[str, Any]:
    opt = Options(**{**spec["options"], "sizes": tuple(spec["options"]["sizes"])})
    samples = Samples()
    fleet = Fleet(settings_of(dict(os.environ)), spec["workers"], opt, samples)
    gc.collect()
    gc.freeze()  # as in the simulator: no full collection of the startup heap mid-window
    fleet.start()
    busy: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            if samples.on:
                busy.append(fleet.busy)

    threading.Thread(target=watch, name="canary-watch", daemon=True).start()
    print("ready", flush=True)
    cpu0 = cpu1 = 0.0
    for word in commands():
        if word == "open":
            gc.freeze()
            cpu0, samples.on = own_cpu_s(), True
        elif word == "close":
            samples.on, cpu1 = False, own_cpu_s()
    stop.set()
    drained = fleet.wind_down(2 * opt.render_s + 10)
    fleet.stop()
    return {"ms": samples.ms_by_name, "counts": samples.counts, "process_cpu_s": cpu1 - cpu0,
            "busy_mean": sum(busy) / len(busy) if busy else 0.0, "drained": drained, "errors": fleet.sched.errors,
            "feed_error": fleet.feed.error}


if __name__ == "__main__":
    report(run(json.loads(sys.argv[1])))
