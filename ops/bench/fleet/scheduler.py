"""The fleet's clock: a heap of next-action times. One scheduler thread pops the actions that are due and hands
each to a bounded thread pool, where it makes its blocking control-plane call (a claim, a progress step, a lease
renewal, a heartbeat, a maintenance pass) and says when its chain acts next, or None when the chain ended.

Thousands of workers are thousands of chains, not threads: the pool's size bounds how many calls run at once
(and the database pool is sized to match). How late each action started against its due time is recorded as
`lateness`: when every pool thread is busy, or this process runs out of CPU (it is one Python process: one core's
worth of Python at a time), actions start late, and it is this process, not the system, that is slow."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ops.bench.fleet.samples import Samples

log = logging.getLogger("svdq.bench.fleet")

# an action runs its call and returns when its chain acts next (time.monotonic()), or None: the chain ended
Action = Callable[[], float | None]


class Scheduler:
    def __init__(self, threads: int, samples: Samples) -> None:
        self.samples = samples
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="fleet")
        self.errors: list[str] = []
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="fleet-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def at(self, when: float, action: Action) -> None:
        with self._cond:
            seq = next(self._seq)
            heapq.heappush(self._heap, (when, seq, action))
            if self._heap[0][1] == seq:  # the new first: the scheduler may be sleeping past it
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if not self._running:
                    return
                due: list[tuple[float, int, Action]] = []
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap))
            for when, _, action in due:
                self.pool.submit(self._call, when, action)

    def _call(self, when: float, action: Action) -> None:
        self.samples.ms("lateness", 1000 * max(0.0, time.monotonic() - when))
        cpu0 = time.thread_time()
        try:
            following = action()
        except Exception as exc:  # noqa: BLE001 - one failed call ends its chain, never the simulation
            self.samples.count("action_errors")
            if len(self.errors) < 5:
                self.errors.append(f"{exc.__class__.__name__}: {exc}"[:300])
            log.warning("simulated action failed: %s", exc)
            return
        finally:
            self.samples.cpu(getattr(action, "__qualname__", "action"), time.thread_time() - cpu0)
        if following is not None:
            self.at(following, action)

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._heap.clear()
            self._cond.notify()
        self._thread.join(timeout=5)
        self.pool.shutdown(wait=True, cancel_futures=True)
