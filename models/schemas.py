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


class Measurement(ApiModel):
    value: float
    unit: str


class MeasuredOn(ApiModel):
    """The clip a job's metrics were measured on: its decoded frames, before any post-processing."""

    frames: int
    width: int
    height: int


class VideoMetrics(ApiModel):
    """What the worker measured on a render's decoded frames (worker/video_metrics.py has each definition)."""

    motion: Measurement = Field(description="Mean optical-flow magnitude between consecutive frames over the "
                                "pixels with texture to follow, in pixels per frame at the measured size (px/frame).")
    frame_difference: Measurement = Field(description="Mean absolute difference of consecutive frames over pixels "
                                          "and channels, in 8-bit levels (levels/frame, 0-255).")
    flicker: Measurement = Field(description="Mean absolute second difference of the frames' mean luma, halved "
                                 "(levels, 0-255): a clip alternating between brightnesses a and b scores |a - b|, "
                                 "a still, steadily moving or steadily fading one about 0.")
    first_frame_similarity: Measurement = Field(description="SSIM of the source image (as fitted to the output "
                                                "size) and the first frame: 1 = identical, about 0 = unrelated.")
    measured_on: MeasuredOn | None = None


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
    # null when measuring failed (the render still succeeded) and for results stored before metrics existed
    metrics: VideoMetrics | None = None


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
    # set once the retention pass deleted the result's objects (SVDQ_RESULT_RETENTION_S): `result` is null then,
    # and the video and poster answer 410 result_expired
    result_expired_at: datetime | None = None
    error: ErrorInfo | None = None
    reused_from: str | None = None
    rerun_of: str | None = None
    cancel_requested: bool = False
    sweep_cell: dict[str, Any] | None = None
    sweep_index: int | None = None
    runtime: dict[str, Any] | None = None
    # the webhook events it gets, in the order they happen: "started", "completed"
    webhook_events_filter: list[str] = Field(default_factory=lambda: ["completed"])
    preview: bool = Field(True, description="Live previews while it denoises: preview_url, and `preview` events "
                          "on its event stream with ?preview=true.")
    preview_url: str | None = Field(None, description="Its latest live preview (a JPEG), while it runs.")

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
    created_at: datetime | None = None


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
    params: dict[str, Any] = Field(default_factory=dict)
    images: list[str] = Field(default_factory=list)
    output: dict[str, Any] = Field(default_factory=dict)
    grids: list[SweepGrid] = Field(default_factory=list)
    gallery_url: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    canceled_at: datetime | None = None
    webhook_events_filter: list[str] = Field(default_factory=lambda: ["completed"])

    @property
    def done(self) -> bool:
        """Every cell ended and every grid was composed (or could not be)."""
        return self.status in TERMINAL and all(g.status in ("done", "failed") for g in self.grids)

    @property
    def finished_cells(self) -> int:
        return sum(self.counts.get(s, 0) for s in TERMINAL)


class WorkerInfo(ApiModel):
    """A ready worker of a model, as its heartbeat advertises it."""

    name: str | None = None
    device: str | None = None
    postprocess: dict[str, list[str]] | None = None


class Model(ApiModel):
    name: str
    default: bool = Field(False, description="The model a job or sweep that names none renders with.")
    description: str | None = None
    source: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)
    # each numeric parameter's bounds for this model: {"width": {"min": 64, "max": 2048, "multiple_of": 64}, ...}
    ranges: dict[str, dict[str, float]] = Field(default_factory=dict)
    workers_ready: int = 0
    # each post-processing stage's methods some ready worker runs ("learned" only where one has the weights)
    postprocess: dict[str, list[str]] = Field(default_factory=dict)
    workers: list[WorkerInfo] = Field(default_factory=list)


class WebhookDelivery(ApiModel):
    """One webhook event for one URL: its stable id (the `webhook-id` header), attempts and outcome."""

    id: str
    event: str
    url: str
    status: str  # pending | delivered | failed
    attempts: int
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime | None = None


class DeliveryLog(ApiModel):
    items: list[WebhookDelivery]


class KeyLimits(ApiModel):
    rate_limit_per_s: int
    max_open_jobs: int
    max_sweep_cells: int


class KeySelf(ApiModel):
    """The calling key: its id, name, the secret that signs its webhooks, and the limits that apply to it."""

    id: str
    name: str
    prefix: str
    admin: bool
    webhook_secret: str | None = None
    created_at: datetime | None = None
    limits: KeyLimits


class ServiceStatus(ApiModel):
    status: str  # "ok" (/healthz) or "ready" (/readyz)


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
