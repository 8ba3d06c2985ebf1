"""Where the simulated workers get their job ids: the real broker queue. One thread consumes the model's Celery
queue (`render.<model>`, every priority list kombu's Redis transport keeps for it) with the Celery app's own
connection settings, the way a worker's consumer does: each message is delivered unacknowledged, at most
`prefetch` (the fleet's size: a real worker prefetches one) at a time, and acknowledged only after its job ended
(acks_late). The messages are the API's own, sent by models.queue.make_enqueue."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.message import Message
from kombu.messaging import Consumer

from models.queue import RENDER_TASK

log = logging.getLogger("svdq.bench.fleet")

# (job id, or None for a message that is not a render; the message, to acknowledge once its job ended)
Deliver = Callable[[str | None, Message], None]


class BrokerFeed:
    def __init__(self, app: Celery, queue: str, *, prefetch: int, deliver: Deliver) -> None:
        self.app, self.prefetch, self.deliver = app, prefetch, deliver
        self.queue = app.amqp.queues[queue]  # the very Queue (and exchange) the API's send_task declares
        self.delivered = 0
        self.cpu_s = 0.0  # this thread's CPU seconds so far
        self.error: str | None = None
        self._acks: deque[Message] = deque()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-broker", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(15) or self.error is not None:
            raise RuntimeError(f"the broker consumer did not start: {self.error or 'no answer in 15 s'}")

    def ack(self, message: Message) -> None:
        """From any thread: the consumer's own thread acknowledges it (a kombu channel is not thread-safe)."""
        self._acks.append(message)

    def _on_message(self, body: Any, message: Message) -> None:
        self.delivered += 1
        is_render = message.headers.get("task") == RENDER_TASK and isinstance(body, (list, tuple)) and body[0]
        self.deliver(str(body[0][0]) if is_render else None, message)

    def _run(self) -> None:
        try:
            with self.app.connection_for_read() as conn:
                consumer = Consumer(conn.channel(), queues=[self.queue],  # type: ignore[no-untyped-call]
                                    callbacks=[self._on_message], accept=["json"], prefetch_count=self.prefetch)
                consumer.consume()  # type: ignore[no-untyped-call]
                self._ready.set()
                cpu0 = time.thread_time()
                while not self._stop.is_set():
                    self.cpu_s = time.thread_time() - cpu0
                    while self._acks:
                        self._acks.popleft().ack()  # type: ignore[no-untyped-call]
                    try:
                        conn.drain_events(timeout=0.02)
                    except TimeoutError:
                        pass
                while self._acks:
                    self._acks.popleft().ack()  # type: ignore[no-untyped-call]
                consumer.cancel()  # type: ignore[no-untyped-call]
                # closing the channel puts what is still unacknowledged back on the queue, as a stopped worker's does
        except Exception as exc:  # noqa: BLE001 - reported by the run, which fails the size
            self.error = f"{exc.__class__.__name__}: {exc}"
            log.error("broker consumer failed: %s", exc)
        finally:
            self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
