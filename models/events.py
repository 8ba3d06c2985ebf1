"""Live job signals in Redis: progress and status events on pub/sub (for SSE), cancel flags, and the
per-model queue order used for queue_position. Redis is a delivery mechanism: each of these is also
derivable from the jobs table, so losing Redis loses speed, never a job.

The events are typed (pydantic) on both ends: the worker and the API publish `StatusEvent` / `ProgressEvent`,
the event stream reads them back with `parse_job_event`."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from models.schemas import Progress
from models.status import JobStatus

log = logging.getLogger("svdq.events")

CANCEL_TTL_S = 7 * 24 * 3600


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class StatusEvent(_Event):
    """A job's status changed: readers re-read the row, which is the truth."""

    type: Literal["status"] = "status"
    status: JobStatus


class ProgressEvent(_Event):
    """A step of a running job: carried live, written to the row only now and then (throttled)."""

    type: Literal["progress"] = "progress"
    status: Literal["running"] = "running"
    progress: Progress


class PreviewEvent(_Event):
    """A live preview of a running job (worker/preview.py): a small JPEG of a few frames made from the latents
    at `step` without the VAE, base64 in `image`. Carried on the job's channel and kept as its latest preview;
    never written to the row."""

    type: Literal["preview"] = "preview"
    step: int
    total: int
    width: int
    height: int
    content_type: Literal["image/jpeg"] = "image/jpeg"
    image: str  # base64


class GridEvent(_Event):
    """A sweep's comparison grid for one image was composed (or could not be)."""

    type: Literal["grid"] = "grid"
    image_id: str
    status: str


JobEvent = Annotated[StatusEvent | ProgressEvent | PreviewEvent, Field(discriminator="type")]
_JOB_EVENT: TypeAdapter[StatusEvent | ProgressEvent | PreviewEvent] = TypeAdapter(JobEvent)
PREVIEW_TTL_S = 3600  # the latest preview outlives its job by this long (GET /v1/jobs/{id}/preview)


def parse_job_event(raw: bytes | str) -> StatusEvent | ProgressEvent | PreviewEvent | None:
    """An event as published on a job's channel; None for anything else (a newer publisher's kind, garbage)."""
    try:
        return _JOB_EVENT.validate_json(raw)
    except ValidationError:
        return None


def job_channel(job_id: str) -> str:
    return f"svdq:jobs:{job_id}:events"


def preview_key(job_id: str) -> str:
    return f"svdq:jobs:{job_id}:preview"


def sweep_channel(sweep_id: str) -> str:
    return f"svdq:sweeps:{sweep_id}:events"


def cancel_key(job_id: str) -> str:
    return f"svdq:jobs:{job_id}:cancel"


def queue_key(model: str) -> str:
    return f"svdq:queue:{model}"


def queue_score(priority: int, created_at: datetime) -> float:
    # higher priority first, then first come first served; ms resolution fits a double exactly
    return (9 - priority) * 1e13 + created_at.timestamp() * 1000


def best_effort(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - Redis blinking must never fail a render or a request
        log.warning("redis call %s failed: %s", getattr(fn, "__name__", fn), exc)
        return None


class JobSignals:
    """Sync Redis helpers, used by workers and by the API's sync routes."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def publish(self, job_id: str, event: StatusEvent | ProgressEvent) -> None:
        if self.redis is not None:
            best_effort(self.redis.publish, job_channel(job_id), event.model_dump_json())

    def publish_preview(self, job_id: str, event: PreviewEvent) -> None:
        """On the job's channel for live streams, and kept as its latest preview (one round trip)."""
        if self.redis is not None:
            raw = event.model_dump_json()
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(preview_key(job_id), raw, ex=PREVIEW_TTL_S)
            pipe.publish(job_channel(job_id), raw)
            best_effort(pipe.execute)

    def latest_preview(self, job_id: str) -> PreviewEvent | None:
        raw = None if self.redis is None else best_effort(self.redis.get, preview_key(job_id))
        event = parse_job_event(raw) if raw else None
        return event if isinstance(event, PreviewEvent) else None

    def publish_grid(self, sweep_id: str, event: GridEvent) -> None:
        if self.redis is not None:
            best_effort(self.redis.publish, sweep_channel(sweep_id), event.model_dump_json())

    def request_cancel(self, job_id: str) -> None:
        if self.redis is not None:
            best_effort(self.redis.set, cancel_key(job_id), "1", ex=CANCEL_TTL_S)

    def cancel_requested(self, job_id: str) -> bool:
        if self.redis is None:
            return False
        return bool(best_effort(self.redis.exists, cancel_key(job_id)))

    def queued(self, model: str, job_id: str, priority: int, created_at: datetime) -> int | None:
        """Into the model's queue index; its place there as it went in (0 = next), in the same round trip, or
        None when Redis did not answer."""
        if self.redis is None:
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(queue_key(model), {job_id: queue_score(priority, created_at)})
        pipe.zrank(queue_key(model), job_id)
        answers = best_effort(pipe.execute)
        rank = answers[1] if answers else None
        return int(rank) if rank is not None else None

    def dequeued(self, model: str, job_id: str) -> None:
        if self.redis is not None:
            best_effort(self.redis.zrem, queue_key(model), job_id)

    def position(self, model: str, job_id: str) -> int | None:
        if self.redis is None:
            return None
        rank = best_effort(self.redis.zrank, queue_key(model), job_id)
        return int(rank) if rank is not None else None
