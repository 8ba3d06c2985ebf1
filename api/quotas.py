"""Per-key quotas: the jobs a key has in flight, counted in Redis so the limit holds across API replicas, and the
model queues' depth (the request rate is api/rate.py)."""

from __future__ import annotations

import logging
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


# the common case in one round trip: with the key's count cached and both limits clear, count the new jobs in
_TAKE_IF_CLEAR = """
local mine = redis.call('get', KEYS[1])
local depth = redis.call('zcard', KEYS[2])
local new = tonumber(ARGV[1])
if mine and tonumber(mine) + new <= tonumber(ARGV[2]) and depth + new <= tonumber(ARGV[3]) then
  redis.call('incrby', KEYS[1], new)
  return 1
end
return 0
"""


def check_capacity(state: AppState, session: Session, *, key: ApiKey, model: str, new_jobs: int) -> None:
    """Refuse work the queues cannot take: the key's own jobs in flight (429), or the model's queue (503)."""
    per_key, per_model = limits_for(key, state.settings).max_open_jobs, state.settings.max_queue_depth
    if best_effort(state.redis.eval, _TAKE_IF_CLEAR, 2, _open_jobs_key(key), queue_key(model), new_jobs, per_key,
                   per_model) == 1:
        return
    # otherwise (no cached count, a limit reached, Redis away) the careful path: count in SQL before refusing
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
