"""Following a job's event stream by the Server-Sent Events rules, for both clients (httpx-sse parses it).

Each event's `id` and the server's `retry:` are kept; a stream that breaks off is reconnected after that delay
with `Last-Event-ID`, so the server resumes after the last state this client saw instead of repeating it (and
answers 204 once that was the end). After RECONNECTS breaks in a row with no event between them the client
stops trying the stream and polls."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from httpx_sse import ServerSentEvent

RECONNECTS = 3


@dataclass
class Resume:
    last_id: str | None = None
    retry_s: float = 1.0
    breaks: int = 0

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_id} if self.last_id else {}

    def timeout(self, deadline: float | None) -> httpx.Timeout:
        """Reads wait at most until the caller's deadline (the keepalive comes every 15 s otherwise)."""
        read = 60.0 if deadline is None else max(0.1, min(60.0, deadline - time.monotonic() + 0.5))
        return httpx.Timeout(30, read=read)

    def heard(self, event: ServerSentEvent) -> None:
        if event.id:
            self.last_id = event.id
        if event.retry is not None:
            self.retry_s = event.retry / 1000
        self.breaks = 0

    def broke(self) -> bool:
        """The stream broke off: whether to connect again (after retry_s) rather than poll."""
        self.breaks += 1
        return self.breaks <= RECONNECTS
