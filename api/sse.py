"""GET /v1/jobs/{id}/events: one `data:` job object per change, ending after a terminal status.

Live progress arrives on Redis pub/sub; status changes are re-read from the database, which is the truth.
If pub/sub is silent the stream re-reads the row every few seconds, so a lost Redis message delays an
event, never loses the end of the stream.

By the Server-Sent Events standard: every event has an `id:` naming the job state it carries (attempt, status,
step, stage), the first one also `retry:` (how long a client waits before reconnecting), and a comment line
keeps an idle connection open every KEEPALIVE_S. A client that reconnects with `Last-Event-ID` gets the job as
it is now, unless that is the state it last saw: then the stream waits for the next change, and for a job that
has ended it answers 204 (which tells an EventSource to stop reconnecting). Each event is the whole job, so a
resumed stream never misses the end or the latest state; the progress steps in between are not replayed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from models.events import PreviewEvent, ProgressEvent, job_channel, parse_job_event
from models.schemas import Job
from models.status import TERMINAL

REREAD_S = 3.0
KEEPALIVE_S = 15.0
RETRY_MS = 2000


def event_id(view: Job) -> str:
    """The job state an event carries: the same state always has the same id, and any change gives a new one."""
    return f"{view.attempts}.{view.status}.{view.progress.step}.{view.progress.stage or ''}"


def sse(view: Job, *, retry: bool = False) -> bytes:
    head = f"retry: {RETRY_MS}\n" if retry else ""
    return f"{head}id: {event_id(view)}\ndata: ".encode() + view.model_dump_json().encode() + b"\n\n"


def already_seen_end(view: Job, last_event_id: str | None) -> bool:
    """A reconnect after the last event of an ended job: nothing more will come (the route answers 204)."""
    return view.status in TERMINAL and last_event_id == event_id(view)


async def job_event_stream(aredis: Any, job_id: str, load_view: Callable[[], Awaitable[Job]],
                           is_disconnected: Callable[[], Any],
                           last_event_id: str | None = None, max_s: float | None = None,
                           previews: bool = False) -> AsyncIterator[bytes]:
    """The job's events until it ends, or for at most `max_s` (then the stream closes and the client
    reconnects with Last-Event-ID, as the SSE rules have it: no connection is held for ever). With `previews`,
    also `event: preview` events (no id: they are not job states, so a resume is unaffected by them)."""
    pubsub = aredis.pubsub()
    until = None if not max_s else time.monotonic() + max_s
    subscribed = False
    try:
        try:
            await pubsub.subscribe(job_channel(job_id))  # before the first read, so no change falls between
            subscribed = True
        except Exception:  # noqa: BLE001,S110 - without Redis the stream falls back to re-reading the row
            pass
        view = await load_view()
        if last_event_id == event_id(view):  # a resume: the client has this state already
            yield f"retry: {RETRY_MS}\n\n".encode()
        else:
            yield sse(view, retry=True)
        last_sent, last_read = time.monotonic(), time.monotonic()
        while view.status not in TERMINAL:
            if await is_disconnected() or (until is not None and time.monotonic() > until):
                return
            msg = None
            if subscribed:
                try:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                except Exception:  # noqa: BLE001 - Redis went away mid-stream: keep going on the database
                    subscribed = False
            else:
                await asyncio.sleep(0.5)
            new = view
            if msg is not None:
                event = parse_job_event(msg["data"])
                if isinstance(event, PreviewEvent):
                    if previews:
                        last_sent = time.monotonic()
                        yield f"event: preview\ndata: {event.model_dump_json()}\n\n".encode()
                    continue
                if isinstance(event, ProgressEvent) and view.status == "running":
                    new = view.model_copy(update={"progress": event.progress, "queue_position": None})
                else:
                    new = await load_view()
                    last_read = time.monotonic()
            elif time.monotonic() - last_read > REREAD_S:
                new = await load_view()
                if new.status == view.status == "running":
                    new = new.model_copy(update={"progress": view.progress})  # the row lags the live progress
                last_read = time.monotonic()
            if new != view:
                view = new
                last_sent = time.monotonic()
                yield sse(view)
            elif time.monotonic() - last_sent > KEEPALIVE_S:
                last_sent = time.monotonic()
                yield b": keepalive\n\n"
    finally:
        if subscribed:
            try:
                await pubsub.unsubscribe()
            except Exception:  # noqa: BLE001,S110
                pass
        await pubsub.aclose()
