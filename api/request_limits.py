"""Refuse request bodies over the limit while they stream in, before the whole body is read."""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"error": {
            "code": "payload_too_large",
            "message": f"The request body is over the limit of {self.max_bytes} bytes; send a smaller image.",
            "details": [],
        }}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)


class ConcurrencyLimit:
    """At most `limit` requests at once may use the database; the rest wait their turn (asynchronously).

    A request hands its database connection between worker threads (dependency, endpoint, teardown). With
    more requests in flight than pooled connections, every thread can end up waiting for a connection that
    a request waiting for a thread holds: a deadlock that the pool timeout turns into 500s. Keeping in-flight
    requests below the pool size makes that impossible. Event streams and health checks are not counted:
    they hold no connection while they wait."""

    EXEMPT_SUFFIXES = ("/events", "/healthz", "/metrics")

    def __init__(self, app: ASGIApp, *, limit: int, wait_s: float = 30.0) -> None:
        self.app, self.wait_s = app, wait_s
        self.slots = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.endswith(self.EXEMPT_SUFFIXES) or path.startswith("/ui/"):
            await self.app(scope, receive, send)
            return
        try:
            if self.slots.locked():  # only a request that has to wait pays for a timed wait
                await asyncio.wait_for(self.slots.acquire(), timeout=self.wait_s)
            else:
                await self.slots.acquire()
        except TimeoutError:
            body = json.dumps({"error": {"code": "overloaded", "message": "The API is busy; retry shortly.",
                                         "details": []}}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"2"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()
