"""What a chaos run is: its options, the reliability timings every process of its stack gets, the render params
of its jobs, the parts a run holds (the stack, a database engine, the webhook receiver), and its progress log."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from ops.harness.processes import Proc
from ops.harness.services import DEFAULT_PG_ADMIN_URL
from ops.harness.stack import Stack
from ops.harness.webhooks import WebhookReceiver

PG_ADMIN_URL = os.environ.get("SVDQ_CHAOS_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
MODEL = "tiny"
EXPECTED_OBJECTS = ["poster.jpg", "video.mp4"]

# Reliability timings for every process of the stack. Chosen so that a run of 200 jobs with 10 kills, 3 wipes
# and a SIGTERM recovers fast and never fails an innocent job:
# - LEASE_S=3 (renewed every 0.75 s): a killed worker's job is back in the queue within lease + one
#   maintenance pass, about 4 s. Not shorter: on 2 busy cores a live worker's renewal must never miss a
#   whole lease, or the reaper would take the job from a healthy worker (it shows up below as "leases taken
#   from live workers").
# - MAINTENANCE_INTERVAL_S=1, RECONCILE_AFTER_S=2: after Redis restarts empty, queued jobs are sent again
#   within about 3 s.
# - SHUTDOWN_GRACE_S=2: longer than a tiny render here (about 1-2 s), so a SIGTERMed worker usually finishes
#   its job and exits; when it does not, the job is handed back after 2 s.
# - MAX_ATTEMPTS=5: only a SIGKILL or the SIGTERM of the worker rendering a job charges that job an extra
#   attempt (a Redis wipe does not: running jobs keep their lease, queued ones are re-sent unclaimed). The
#   11 such faults land on the job being rendered by a randomly chosen worker, and a requeued job goes to the
#   back of a queue of up to 200, so one job being hit four times over is already far-fetched; five attempts
#   leave room for that and for one false reap, while a real poison job would still end worker_lost.
TIMINGS = {"SVDQ_LEASE_S": "3", "SVDQ_MAINTENANCE_INTERVAL_S": "1", "SVDQ_RECONCILE_AFTER_S": "2",
           "SVDQ_SHUTDOWN_GRACE_S": "2", "SVDQ_MAX_ATTEMPTS": "5"}
PARAMS: dict[str, Any] = {"num_inference_steps": 3, "num_frames": 4}


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Options:
    jobs: int
    kills: int
    wipes: int
    sigterms: int
    workers: int
    deadline: float
    seed: int


@dataclass
class Run:
    """A run's parts: its stack (API, workers, Redis as subprocesses), an engine on its database to watch the
    jobs, and the receiver of every job's webhook."""

    stack: Stack
    engine: Engine
    hooks: WebhookReceiver

    def start_worker(self) -> Proc:
        """One more worker (a replacement), not waited for: the run goes on while it loads."""
        p = self.stack.start_worker(MODEL, wait=False)
        log(f"started {p.name} (pid {p.pid})")
        return p
