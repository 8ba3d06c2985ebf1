"""Job-time histograms shared across the fleet: `svdq_job_queue_wait_seconds` and `svdq_job_render_seconds` must
add up over every worker and be served by any API replica, while only a worker sees a job end. So when a job
ends, its worker adds the two durations to bucket counters in Redis (one MULTI pipeline: HINCRBY on the bucket
and the count, HINCRBYFLOAT on the sum), and the API's collector turns them into histograms at scrape time
(`cumulative`). Redis runs without persistence: a restart zeroes them, which Prometheus reads as a counter
reset. This module is that contract: names, buckets, the write and the read."""

from __future__ import annotations

import math
from typing import Any

QUEUE_WAIT = "queue_wait_seconds"
RENDER = "render_seconds"
JOB_BUCKETS: dict[str, tuple[float, ...]] = {
    QUEUE_WAIT: (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
    RENDER: (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
}


def job_histogram_key(name: str) -> str:
    return f"svdq:metrics:job_{name}"


def bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def record_job_times(redis: Any, model: str, seconds: dict[str, float]) -> None:
    """Adds one job's durations to the shared counters. Each observation lands in its own (smallest
    fitting) bucket field; the reader makes them cumulative, so a write costs three commands per metric."""
    pipe = redis.pipeline(transaction=True)
    for name, value in seconds.items():
        key = job_histogram_key(name)
        bound = next((b for b in JOB_BUCKETS[name] if value <= b), math.inf)
        pipe.hincrby(key, f"{model}|{bucket_label(bound)}", 1)
        pipe.hincrby(key, f"{model}|count", 1)
        pipe.hincrbyfloat(key, f"{model}|sum", value)
    pipe.execute()


def cumulative(raw: dict[Any, Any], bounds: tuple[float, ...]) -> dict[str, tuple[list[tuple[str, float]], float]]:
    """Per-bucket counts as the workers wrote them -> cumulative buckets (+Inf = count) and the sum."""
    fields: dict[str, dict[str, float]] = {}
    for k, v in raw.items():
        model, _, field = (k.decode() if isinstance(k, bytes) else k).rpartition("|")
        fields.setdefault(model, {})[field] = float(v)
    out: dict[str, tuple[list[tuple[str, float]], float]] = {}
    for model, f in fields.items():
        observed = [(math.inf if le == "+Inf" else float(le), n) for le, n in f.items() if le not in ("count", "sum")]
        buckets = [(bucket_label(b), sum(n for le, n in observed if le <= b)) for b in bounds]
        buckets.append(("+Inf", f.get("count", sum(n for _, n in observed))))
        out[model] = (buckets, f.get("sum", 0.0))
    return out
