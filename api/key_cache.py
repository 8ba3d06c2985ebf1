"""This API process's memory of the keys it looked up, so a request with a known key costs no database read.

A key is kept for Settings.key_cache_s after its lookup. A revoke or a change of limits (`svdq keys ...`) is
broadcast over Redis (models.keys.KEY_CHANGES), and every API process that hears it forgets the key at once; one
that does not (Redis away, a message lost) lets go when the entry expires, and forgets everything whenever its
subscription drops. So a revoked key can read for at most key_cache_s after its revocation, and a key unknown or
revoked at lookup is never kept."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from models.keys import KEY_CHANGES
from models.tables import ApiKey

log = logging.getLogger("svdq.api")


class KeyCache:
    """Active keys by the digest of their secret, each until `ttl_s` after its lookup; forgotten at once by id."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._keys: dict[str, tuple[float, ApiKey]] = {}

    def get(self, digest: str) -> ApiKey | None:
        entry = self._keys.get(digest)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._keys.pop(digest, None)
            return None
        return entry[1]

    def put(self, digest: str, key: ApiKey) -> None:
        if self.ttl_s > 0:
            self._keys[digest] = (time.monotonic() + self.ttl_s, key)

    def forget(self, key_id: str) -> None:
        for digest in [d for d, (_, key) in self._keys.items() if key.id == key_id]:
            self._keys.pop(digest, None)

    def clear(self) -> None:
        self._keys.clear()


async def follow_key_changes(aredis: Any, cache: KeyCache, *, retry_s: float = 1.0) -> None:
    """Runs for the API process's life: forgets each key whose change is announced. Whenever the subscription is
    lost, everything cached is forgotten too (a change may have been missed), and it subscribes again."""
    while True:
        pubsub = aredis.pubsub()
        try:
            await pubsub.subscribe(KEY_CHANGES)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message["data"]
                    cache.forget(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis away: forget all, try again
            log.warning("key change subscription lost (%s); key cache cleared", str(exc)[:200])
        finally:
            cache.clear()
            try:
                await pubsub.aclose()
            except Exception:  # noqa: BLE001,S110 - it is being replaced
                pass
        await asyncio.sleep(retry_s)


async def stop_following(task: asyncio.Task[None], *, within_s: float = 2.0) -> None:
    """Cancel the follower and wait for it, cancelling again while it runs on: redis-py swallows a cancel that
    lands while a connection is being set up (its health check's `wait_for`), and the task then blocks in
    `listen()` for good, which had the API's shutdown wait forever. Gives up after `within_s`."""
    deadline = time.monotonic() + within_s
    while not task.done() and time.monotonic() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.done():
        log.warning("the key change follower did not stop within %.1f s", within_s)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("the key change follower had failed: %r", task.exception())
