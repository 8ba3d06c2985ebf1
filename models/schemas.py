"""Typed shapes of the v1 API's answers (API.md), shared by the API (its OpenAPI document declares them, and the
schemathesis test checks every answer against them) and the SDK (`client.types` re-exports them).

Only pydantic (and the status names) is imported, so the API, the worker and scripts can share these without heavy
deps. Every model keeps fields it does not know (`extra="allow"`): a newer server adding fields never breaks an older
client, and `model_dump()` gives back everything the server sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from models.status import TERMINAL


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class Progress(ApiModel):
    step: int = 0
    total: int = 0
    fraction: float = 0.0
    stage: str | None = None


class ErrorInfo(ApiModel):
    code: str | None = None
    message: str | None = None


class JobResult(ApiModel):
    video_url: str
    poster_url: str | None = None
    content_type: str
    bytes: int
    sha256: str
    frames: int
    width: int
    height: int
    fps: int | float


class Job(ApiModel):
    id: str
    # a plain string, not an enum: a status a newer server adds must still parse
    status: str
    model: str
    image_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] = Field(default_factory=dict)
    postprocess: dict[str, Any] | None = None
    priority: int = 5
    queue_position: int | None = None
    progress: Progress = Field(default_factory=Progress)
    attempts: int = 0
    worker: str | None = None
    sweep_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: JobResult | None = None
    error: ErrorInfo | None = None
    reused_from: str | None = None
    rerun_of: str | None = None
    cancel_requested: bool = False
    sweep_cell: dict[str, Any] | None = None
    sweep_index: int | None = None
    runtime: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class Image(ApiModel):
    id: str
    width: int
    height: int
    content_type: str
    bytes: int
    sha256: str


class SweepGrid(ApiModel):
    image_id: str
    status: str
    video_url: str | None = None
    poster_url: str | None = None
    error: str | None = None


class Sweep(ApiModel):
    id: str
    name: str | None = None
    model: str | None = None
    status: str
    total: int
    counts: dict[str, int] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    grids: list[SweepGrid] = Field(default_factory=list)
    gallery_url: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        """Every cell ended and every grid was composed (or could not be)."""
        return self.status in TERMINAL and all(g.status in ("done", "failed") for g in self.grids)

    @property
    def finished_cells(self) -> int:
        return sum(self.counts.get(s, 0) for s in TERMINAL)


class Model(ApiModel):
    name: str
    source: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)
    workers_ready: int = 0


T = TypeVar("T", bound=BaseModel)


class ErrorBody(ApiModel):
    code: str
    message: str
    details: list[Any] = Field(default_factory=list)


class ErrorEnvelope(ApiModel):
    """Every 4xx and 5xx answer: `{"error": {"code", "message", "details"}}`."""

    error: ErrorBody


class Page(ApiModel, Generic[T]):
    """One page of a list; `next_cursor` is None on the last."""

    items: list[T]
    next_cursor: str | None = None
