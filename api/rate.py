"""Per-key request rates, counted in Redis so they hold across API replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from api.errors import ApiError
from models.tables import ApiKey

log = logging.getLogger("svdq.api")


class RateLimiter:
    """Each key's requests per second, counted in Redis in one-second windows so the limit holds across API
    replicas. A process takes its permits in batches (INCRBY a tenth of the limit, at most 100, at least 1) and
    spends them locally, so a busy key costs one Redis call per batch instead of one per request. Only the permits
    Redis counted within the limit are ever granted, so the limit is never exceeded; permits a process took but did
    not use in their second are lost (at most one batch per process per second)."""

    def __init__(self, aredis: Any) -> None:
        self.aredis = aredis
        self._held: dict[str, tuple[int, int]] = {}  # key id -> (its window's second, permits left in it)
        self._refills: dict[str, asyncio.Lock] = {}  # one batch taken at a time per key, however many requests wait

    def _take(self, key_id: str, second: int) -> bool:
        window, left = self._held.get(key_id, (0, 0))
        if window == second and left > 0:
            self._held[key_id] = (second, left - 1)
            return True
        return False

    async def check(self, key: ApiKey, per_second: int) -> None:
        if per_second <= 0:
            return
        now = time.time()
        second = int(now)
        if self._take(key.id, second):
            return
        async with self._refills.setdefault(key.id, asyncio.Lock()):
            if self._take(key.id, second):  # another request's batch arrived meanwhile
                return
            await self._refill(key, per_second, now, second)

    async def _refill(self, key: ApiKey, per_second: int, now: float, second: int) -> None:
        batch = max(1, min(100, per_second // 10))
        bucket = f"svdq:rl:{key.id}:{second}"
        try:
            counted = int(await self.aredis.incrby(bucket, batch))
            if counted == batch:  # the window's first batch sets its expiry
                await self.aredis.expire(bucket, 2)
        except Exception as exc:  # noqa: BLE001 - a Redis blip must not lock every client out
            log.warning("rate limit check skipped: %s", exc)
            return
        granted = min(counted, per_second) - (counted - batch)
        if granted <= 0:
            retry = max(1, round(1 - (now % 1) + 0.5))
            raise ApiError(429, "rate_limited", f"More than {per_second} requests per second with this key; "
                           f"slow down and retry after {retry} s.", headers={"Retry-After": str(retry)})
        self._held[key.id] = (second, granted - 1)
