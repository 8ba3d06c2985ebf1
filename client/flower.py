"""`svdq flower`: Flower on the svdq Celery app, with its worker list kept current.

Flower's `GET /api/workers` (and the worker pages) answer from its inspect cache, which Flower fills only when it
starts and on `?refresh=1`: a worker that started after Flower was missing from it until someone asked for a
refresh. Its events are another matter: every svdq worker sends them (`-E`, worker_send_task_events), so Flower
hears a new worker's `worker-online` at once and its `worker-heartbeat` every few seconds. Here, a heartbeat or
online event from a worker the cache does not hold yet has Flower inspect that one worker, so it is listed within a
heartbeat or two of starting. A worker that did not answer (its control queue may not be consumed yet when it
announces itself) is asked again at its next heartbeat, at most once per RETRY_S."""

from __future__ import annotations

import logging
import time
from typing import Any

from models.queue import create_celery
from models.settings import Settings

log = logging.getLogger("svdq.flower")

WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat"})
RETRY_S = 2.0
COMPLETE = frozenset({"stats", "active_queues"})  # the inspect answers a listed worker must have


def flower_app_class() -> type:
    """Flower's application class, taught to inspect a worker it hears of but has not inspected."""
    from flower.app import Flower

    class SvdqFlower(Flower):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._asked: dict[str, float] = {}
            forward = self.events.on_event

            def on_event(event: dict[str, Any]) -> None:  # on Flower's event thread
                forward(event)
                if event.get("type") in WORKER_EVENTS and event.get("hostname"):
                    self.io_loop.add_callback(self.discover, str(event["hostname"]))

            self.events.on_event = on_event  # Events.run binds its receiver's handler to this attribute

        def discover(self, name: str) -> None:
            """On the IO loop: inspect `name` when the cache lacks it, or lacks an answer Flower's list shows (each
            inspect method's reply lands on its own; one that timed out is asked again at a later heartbeat)."""
            if COMPLETE <= set(self.workers.get(name) or {}):
                self._asked.pop(name, None)
                return
            now = time.monotonic()
            if now - self._asked.get(name, float("-inf")) < RETRY_S:
                return
            self._asked[name] = now
            log.info("worker %s is not in Flower's worker list yet: inspecting it", name)
            self.update_workers(workername=name)

    return SvdqFlower


def run_flower(settings: Settings, *, port: int, host: str) -> int:
    """Flower's own command (its options, FLOWER_* environment, auth) on the svdq app, with SvdqFlower."""
    import flower.command

    flower.command.Flower = flower_app_class()  # the command builds its application from this name
    # the svdq app rather than `celery -b URL`: the workers' transport options, no broker password on argv
    rc = create_celery(settings).start(["flower", f"--port={port}", f"--address={host}"])
    return int(rc or 0)
