"""Workers announce themselves in Redis with a short TTL; the API counts who is ready per model."""

from __future__ import annotations

import json
import threading
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


class Heartbeat:
    def __init__(self, redis: Any, model: str, worker: str, info: dict[str, Any]) -> None:
        self.redis, self.key = redis, presence_key(model, worker)
        self.info = json.dumps({"name": worker, "model": model, **info})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svdq-heartbeat", daemon=True)

    def beat(self) -> None:
        self.redis.set(self.key, self.info, ex=TTL_S)

    def _run(self) -> None:
        while not self._stop.wait(EVERY_S):
            try:
                self.beat()
            except Exception:  # noqa: BLE001,S110 - Redis may blink; the next beat tries again
                pass

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.redis.delete(self.key)
        except Exception:  # noqa: BLE001,S110 - the TTL removes it anyway
            pass
