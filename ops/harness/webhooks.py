"""A local webhook endpoint for the tests and the chaos run: it keeps every delivery and, per job (or sweep),
the webhook ids it accepted, and refuses the deliveries it is told to, so retries are part of the run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from client.procs import free_port


def _subject(body: bytes) -> str | None:
    """The id of the job or sweep an event is about (its `data.id`)."""
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    return str(data["id"]) if isinstance(data, dict) and "id" in data else None


class WebhookReceiver:
    """Answers 500 to the first `fail` deliveries and to each one `refuse(subject_id, first)` picks (`first`: no
    delivery for that job or sweep came before), 204 to the rest.

    `requests` holds every delivery ({"headers": lower-cased names, "body": bytes}); `ids` maps each job or sweep
    id to the webhook ids of its accepted deliveries (empty while every delivery was refused)."""

    def __init__(self, fail: int = 0, refuse: Callable[[str, bool], bool] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.ids: dict[str, set[str]] = {}
        self.refused = 0
        self.fail, self.refuse = fail, refuse
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                self.send_response(500 if outer._record({k.lower(): v for k, v in self.headers.items()}, body)
                                   else 204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _record(self, headers: dict[str, str], body: bytes) -> bool:
        """Keeps one delivery; whether to refuse it."""
        subject = _subject(body)
        with self._lock:
            self.requests.append({"headers": headers, "body": body})
            first = subject not in self.ids
            refused = len(self.requests) <= self.fail or (
                self.refuse is not None and subject is not None and self.refuse(subject, first))
            if subject is not None:
                accepted = self.ids.setdefault(subject, set())
                if not refused:
                    accepted.add(headers.get("webhook-id", ""))
            self.refused += refused
        return refused

    @property
    def deliveries(self) -> int:
        return len(self.requests)

    def wait_for(self, n: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Every delivery so far, once there are `n` of them or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.requests

    def wait_all(self, ids: list[str], timeout: float) -> None:
        """Until each of `ids` had a delivery accepted, or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(not self.ids.get(i) for i in ids):
            time.sleep(0.2)
