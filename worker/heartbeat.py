"""The worker's heartbeat: its presence key in Redis (models/presence.py), set at start with what it advertises
(model, device, revision, post-processing methods) and renewed every EVERY_S within a TTL, deleted at stop.
A start/stop service of the worker process (worker/process.py)."""

from __future__ import annotations

import json
import threading
from typing import Any

from models.presence import EVERY_S, TTL_S, presence_key


class Heartbeat:
    name = "heartbeat"

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
