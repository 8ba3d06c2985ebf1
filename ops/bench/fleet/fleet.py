"""N simulated workers on one scheduler: their main chains fed from the broker (a message goes to an idle worker;
a worker that ended its job acknowledges the message and takes the next one waiting), their heartbeats, and the
maintenance pass (worker.maintenance.Maintenance.run_once, timed). With maintenance "fleet", every worker runs
the pass every maintenance_interval_s, as every real worker's Maintenance service does (the Redis lock lets one
pass run at a time, so most attempts are refused); with "one", a single caller does."""

from __future__ import annotations

import random
import threading
import time
from collections import deque

from kombu.message import Message

from models.queue import create_celery, queue_name
from models.settings import Settings
from ops.bench.fleet.broker import BrokerFeed
from ops.bench.fleet.plan import MODEL, Options
from ops.bench.fleet.samples import Samples
from ops.bench.fleet.scheduler import Scheduler
from ops.bench.fleet.workers import SimWorker, base_context
from worker.maintenance import Maintenance


class Fleet:
    def __init__(self, settings: Settings, n: int, opt: Options, samples: Samples) -> None:
        self.samples, self.opt = samples, opt
        self.celery = create_celery(settings)
        self.base = base_context(settings, self.celery, threads=opt.threads)
        self.sched = Scheduler(opt.threads, samples)
        self.maintenance = Maintenance(sessions=self.base.sessions, fx=self.base.fx,
                                       max_attempts=settings.max_attempts,
                                       interval_s=settings.maintenance_interval_s,
                                       reconcile_after_s=settings.reconcile_after_s, store=self.base.store,
                                       idempotency_retention_s=settings.idempotency_retention_s,
                                       result_retention_s=settings.result_retention_s)
        self.interval = settings.maintenance_interval_s
        self.workers = [SimWorker(self.base, i, samples=samples, render_s=opt.render_s, schedule=self.sched.at,
                                  release=self._release) for i in range(n)]
        self.feed = BrokerFeed(self.celery, queue_name(MODEL), prefetch=n, deliver=self._deliver)
        self._lock = threading.Lock()
        self._idle: deque[SimWorker] = deque(self.workers)
        self._waiting: deque[tuple[str | None, Message]] = deque()
        self.taking = True  # False once winding down: messages then wait, to go back on the queue at the end
        self.maintaining = True

    @property
    def busy(self) -> int:
        return len(self.workers) - len(self._idle)

    def start(self) -> None:
        self.sched.start()
        now = time.monotonic()
        for w in self.workers:  # a heartbeat at start, as Heartbeat.start() does, then every EVERY_S
            self.sched.at(now, w.beat)
        callers = len(self.workers) if self.opt.maintenance == "fleet" else 1
        for _ in range(callers):  # workers start at different times: their passes have phases
            self.sched.at(now + random.uniform(0, self.interval), self._maintain)
        if self.workers:  # a consumer with no worker behind it would take messages no one renders
            self.feed.start()

    def _maintain(self) -> float | None:
        if not self.maintaining:
            return None
        t0 = time.perf_counter()
        counts = self.maintenance.run_once()
        if counts:  # {} when another caller held the lock
            self.samples.since("maintenance", t0)
            self.samples.count("maintenance_requeued", counts.get("requeued", 0) + counts.get("reenqueued", 0))
        else:
            self.samples.count("maintenance_refused")
        return time.monotonic() + self.interval

    def _deliver(self, job_id: str | None, message: Message) -> None:
        """From the broker thread: the message to an idle worker, or waiting for one."""
        if job_id is None:
            self.feed.ack(message)
            return
        with self._lock:
            worker = self._idle.popleft() if self.taking and self._idle else None
            if worker is None:
                self._waiting.append((job_id, message))
                return
        worker.assign(job_id, message)
        self.sched.at(time.monotonic(), worker.act)

    def _release(self, worker: SimWorker, message: Message) -> None:
        self.feed.ack(message)
        with self._lock:
            if not (self.taking and self._waiting):
                self._idle.append(worker)
                return
            job_id, following = self._waiting.popleft()
        assert job_id is not None
        worker.assign(job_id, following)
        self.sched.at(time.monotonic(), worker.act)

    def wind_down(self, timeout: float) -> bool:
        """No new job for any worker; True once every running job ended (within `timeout` seconds)."""
        self.taking = False
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.busy == 0

    def stop(self) -> None:
        """The scheduler, the feed (unacknowledged messages go back on the queue) and the heartbeats (their presence
        keys deleted, as Heartbeat.stop() does), then the connections."""
        self.taking = self.maintaining = False
        for w in self.workers:
            w.beating = False
        self.sched.stop()
        if self.workers:
            self.feed.stop()
        pipe = self.base.signals.redis.pipeline(transaction=False)
        for w in self.workers:
            pipe.delete(w.heartbeat.key)
        pipe.execute()
        self.base.engine.dispose()
        self.base.signals.redis.close()
        self.celery.close()
