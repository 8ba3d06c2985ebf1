"""What the lifecycle benchmark runs: full and quick counts, the model and params each row uses, the per-key
limits raised so no request is refused, and its progress log."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from ops.harness.services import DEFAULT_PG_ADMIN_URL

PG_ADMIN_URL = os.environ.get("SVDQ_BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
# no worker is started for these models: their jobs stay queued, so rows 1, 2 and 4 measure the API alone
LOAD_MODEL = "svd-xt"  # rows 1 and 2
QUEUE_MODEL = "svd"  # row 4: its queue stays empty until the bulk fill
E2E_MODEL = "tiny"
E2E_PARAMS: dict[str, Any] = {"num_inference_steps": 1, "num_frames": 2}
SVD_PARAMS: dict[str, Any] = {"motion_bucket_id": 127, "noise_aug_strength": 0.02}

# all the load comes from one key: the per-key rate, open-jobs and queue-depth limits are raised so they never
# refuse a request, while their checks still run (and cost what they cost) on every request
NEVER_REFUSE = {"SVDQ_RATE_LIMIT_PER_S": "1000000000", "SVDQ_MAX_OPEN_JOBS_PER_KEY": "1000000000",
                "SVDQ_MAX_QUEUE_DEPTH": "1000000000"}

FULL: dict[str, Any] = {"load_seconds": 10.0, "concurrency": 16, "pollers": 200, "poll_seconds": 10.0,
                        "poll_interval": 1.0, "jobs": 100, "queued": 100_000, "samples": 300, "warmup": 2.0,
                        "api_workers": 1}
QUICK: dict[str, Any] = {"load_seconds": 2.0, "concurrency": 16, "pollers": 20, "poll_seconds": 2.0,
                         "poll_interval": 0.25, "jobs": 5, "queued": 2_000, "samples": 30, "warmup": 0.5,
                         "api_workers": 1}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Options:
    load_seconds: float
    concurrency: int
    pollers: int
    poll_seconds: float
    poll_interval: float
    jobs: int
    queued: int
    samples: int
    warmup: float
    api_workers: int  # `svdq api --workers N`: the targets are for 1
    quick: bool
