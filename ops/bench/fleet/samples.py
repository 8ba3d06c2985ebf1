"""What the simulation records while the steady window is open: latencies in milliseconds and counts, by name,
from any thread (the pool's, the broker feed's, the event loop's), and gauges sampled now and then (workers busy,
jobs in flight). Nothing is kept outside the window."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict

from ops.bench.lifecycle.load import pct


class Samples:
    def __init__(self) -> None:
        self.on = False  # the window is open
        self.ms_by_name: dict[str, list[float]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)
        self.gauges: dict[str, list[float]] = defaultdict(list)
        self.cpu_s: dict[str, float] = defaultdict(float)  # this process's CPU seconds, by what spent them
        self._lock = threading.Lock()

    def since(self, name: str, t0: float) -> None:
        """The milliseconds since perf_counter() read t0, under `name`."""
        if self.on:
            self.ms_by_name[name].append(1000 * (time.perf_counter() - t0))

    def ms(self, name: str, value_ms: float) -> None:
        if self.on:
            self.ms_by_name[name].append(value_ms)

    def count(self, name: str, k: int = 1) -> None:
        if self.on:
            with self._lock:
                self.counts[name] += k

    def cpu(self, name: str, seconds: float) -> None:
        if self.on:
            with self._lock:
                self.cpu_s[name] += seconds

    def gauge(self, name: str, value: float) -> None:
        if self.on:
            self.gauges[name].append(value)

    def p(self, name: str, q: float) -> float:
        return pct(self.ms_by_name.get(name, []), q)

    def max(self, name: str) -> float:
        values = self.ms_by_name.get(name, [])
        return max(values) if values else math.nan

    def mean_gauge(self, name: str) -> float:
        values = self.gauges.get(name, [])
        return sum(values) / len(values) if values else math.nan

    def n(self, name: str) -> int:
        return len(self.ms_by_name.get(name, []))
