"""What the fleet simulation runs: the fleet sizes, the render it pretends to do, the warm-up and the steady
window, the thread, pool and connection counts, the quick preset for the test suite, and the settings the stack
and the simulated workers share (production's intervals by default)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ops.bench.lifecycle.plan import NEVER_REFUSE, log
from ops.harness.services import DEFAULT_PG_ADMIN_URL

__all__ = ["FULL", "MODEL", "NEVER_REFUSE", "PG_ADMIN_URL", "QUICK", "WEBHOOK_URL", "Options", "log",
           "stack_settings"]

PG_ADMIN_URL = os.environ.get("SVDQ_BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
MODEL = "svd-xt"  # no real worker runs here: only the simulated fleet takes its queue
# every job has a webhook, so job_ended records its event row; loopback is allowed by SVDQ_ALLOW_PRIVATE_URLS, and
# nothing here delivers it (the discard port would refuse it anyway)
WEBHOOK_URL = "http://127.0.0.1:9/svdq-fleet-webhook"


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...]
    render_s: float  # one SVD-XT video on an H100; a denoising step every render_s / steps
    warmup_s: float  # from the first submit until the window opens: the fleet fills up, the intervals get phases
    window_s: float  # the steady window measured
    api_workers: int  # SVDQ_API_WORKERS: `svdq api` processes on the one port
    threads: int  # blocking control-plane calls at once (the database pool has as many connections)
    canary_workers: int  # of each size's N, how many run in the canary process (canary.py), which measures them
    submit_connections: int
    poll_connections: int
    poll_hz: float  # status GETs per job in flight per second
    maintenance: str  # "fleet": every worker runs its pass every interval (as real ones do); "one": a single caller
    reuse: bool  # the jobs' `reuse` flag (the API's default is true)
    lease_s: float
    maintenance_interval_s: float
    reconcile_after_s: float
    progress_interval_s: float
    quick: bool


FULL: dict[str, Any] = {"sizes": (10, 100, 1000, 5000), "render_s": 12.0, "warmup_s": 20.0, "window_s": 30.0,
                        "api_workers": 1, "threads": 16, "canary_workers": 50, "submit_connections": 32,
                        "poll_connections": 128, "poll_hz": 1.0, "maintenance": "fleet", "reuse": True,
                        "lease_s": 60.0, "maintenance_interval_s": 10.0, "reconcile_after_s": 10.0,
                        "progress_interval_s": 0.5}
# tiny sizes and short windows, for the test suite: a lease renewed every 0.5 s and a pass every second, so each
# of them happens inside the window
QUICK: dict[str, Any] = {**FULL, "sizes": (3, 12), "render_s": 1.5, "warmup_s": 2.0, "window_s": 3.0, "threads": 8,
                         "canary_workers": 2, "submit_connections": 4, "poll_connections": 8, "lease_s": 2.0,
                         "maintenance_interval_s": 1.0, "reconcile_after_s": 2.0}


def stack_settings(opt: Options) -> dict[str, str]:
    """The SVDQ_* settings of the API and of the simulated workers (one Settings for both, as in production)."""
    return {**NEVER_REFUSE, "SVDQ_ENV": "dev", "SVDQ_ALLOW_PRIVATE_URLS": "true", "SVDQ_WORKER_METRICS_PORT": "0",
            "SVDQ_API_WORKERS": str(opt.api_workers),
            "SVDQ_LEASE_S": str(opt.lease_s), "SVDQ_MAINTENANCE_INTERVAL_S": str(opt.maintenance_interval_s),
            "SVDQ_RECONCILE_AFTER_S": str(opt.reconcile_after_s),
            "SVDQ_PROGRESS_INTERVAL_S": str(opt.progress_interval_s)}
