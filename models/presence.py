"""Workers announce themselves in Redis with a short TTL (worker/heartbeat.py); the API counts who is ready per
model. Here: the key names, the TTL and the reader."""

from __future__ import annotations

import json
from typing import Any

TTL_S = 30
EVERY_S = 10


def presence_key(model: str, worker: str) -> str:
    return f"svdq:workers:{model}:{worker}"


def ready_workers(redis: Any, model: str) -> list[dict[str, Any]]:
    out = []
    for key in redis.scan_iter(match=f"svdq:workers:{model}:*", count=500):
        raw = redis.get(key)
        if raw:
            out.append(json.loads(raw))
    return out
