"""Per-key quotas: the request rate and the jobs in flight, counted in Redis so they hold across API replicas,
and the model queues' depth."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.state import AppState
from models.events import best_effort, queue_key
from models.keys import limits_for
from models.status import JobStatus
from models.tables import ApiKey, Job

log = logging.getLogger("svdq.api")


def check_rate(redis: Any, key: ApiKey, per_second: int) -> None:
    """A one-second window per key: INCR, expire, refuse past the limit."""
    if per_second <= 0:
        return
    now = time.time()
    bucket = f"svdq:rl:{key.id}:{int(now)}"
    try:
        pipe = redis.pipeline()
        pipe.incr(bucket)
        pipe.expire(bucket, 2)
        count = int(pipe.execute()[0])
    except Exception as exc:  # noqa: BLE001 - a Redis blip must not lock every client out
        log.warning("rate limit check skipped: %s", exc)
        return
    if count > per_second:
        retry = max(1, round(1 - (now % 1) + 0.5))
        raise ApiError(429, "rate_limited", f"More than {per_second} requests per second with this key; "
                       f"slow down and retry after {retry} s.", headers={"Retry-After": str(retry)})


def queue_depth(session: Session, redis: Any, model: str) -> int:
    """The model's queued jobs: the Redis queue index's size (O(1)); counted in SQL if Redis is away."""
    try:
        return int(redis.zcard(queue_key(model)))
    except Exception:  # noqa: BLE001
        return int(session.scalar(select(func.count()).select_from(Job).where(
            Job.model == model, Job.status == JobStatus.QUEUED.value)) or 0)


OPEN_JOBS_TTL_S = 2.0
# add to a key's cached open-jobs count only while the count is cached: an INCRBY on a missing key would make
# a count with no expiry that nothing corrects
_ADD_IF_CACHED = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('incrby', KEYS[1], ARGV[1]) end"


def _open_jobs_key(key: ApiKey) -> str:
    return f"svdq:open:{key.id}"


def _count_open_jobs(session: Session, key: ApiKey, limit: int) -> int:
    """The key's queued and running jobs, counted up to limit + 1 over the (owner_id, status) index."""
    open_states = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    capped = select(Job.id).where(Job.owner_id == key.id, Job.status.in_(open_states)).limit(limit + 1)
    return int(session.scalar(select(func.count()).select_from(capped.subquery())) or 0)


def _open_jobs(state: AppState, session: Session, key: ApiKey, limit: int, *, fresh: bool) -> int:
    """The key's open jobs: from a count cached in Redis for OPEN_JOBS_TTL_S (so a busy key is counted in SQL at
    most every couple of seconds, however many jobs it has open), or counted now when `fresh`. The cache only
    over-counts (finished jobs are not subtracted until it expires), so a refusal is always rechecked fresh."""
    cache = _open_jobs_key(key)
    if not fresh:
        cached = best_effort(state.redis.get, cache)  # None when Redis is away: count in SQL
        if cached is not None:
            return int(cached)
    mine = _count_open_jobs(session, key, limit)
    best_effort(state.redis.set, cache, mine, px=int(OPEN_JOBS_TTL_S * 1000))
    return mine


def check_capacity(state: AppState, session: Session, *, key: ApiKey, model: str, new_jobs: int) -> None:
    """Refuse work the queues cannot take: the key's own jobs in flight (429), or the model's queue (503)."""
    per_key, per_model = limits_for(key, state.settings).max_open_jobs, state.settings.max_queue_depth
    mine = _open_jobs(state, session, key, per_key, fresh=False)
    if mine + new_jobs > per_key:
        mine = _open_jobs(state, session, key, per_key, fresh=True)
    if mine + new_jobs > per_key:
        raise ApiError(429, "rate_limited", f"This key has {mine} jobs queued or running, and the limit is "
                       f"{per_key}; wait for some to finish.", headers={"Retry-After": "10"})
    queued = queue_depth(session, state.redis, model)
    if queued + new_jobs > per_model:
        raise ApiError(503, "queue_full", f"The {model} queue is full ({queued} jobs waiting); retry later.",
                       headers={"Retry-After": "30"})
    best_effort(state.redis.eval, _ADD_IF_CACHED, 1, _open_jobs_key(key), new_jobs)
