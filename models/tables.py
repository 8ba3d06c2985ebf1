"""ORM tables. The jobs table is the truth about every job; Redis only carries job ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, text, true
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from models.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use models.tables.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), unique=True, index=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # per-key limits; None: the service-wide setting (SVDQ_RATE_LIMIT_PER_S, _MAX_OPEN_JOBS_PER_KEY, _MAX_SWEEP_CELLS)
    rate_limit_per_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_open_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_sweep_cells: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_jobs_status_model", "status", "model"),
        Index("ix_jobs_queue", "model", "status", "priority", "created_at"),
        Index("ix_jobs_owner_status", "owner_id", "status"),
        # the retention pass: succeeded jobs whose result is still stored, oldest first (worker/retention.py); partial,
        # so it is read in order (and shrinks as results expire)
        Index("ix_jobs_result_expiry", "status", "finished_at", postgresql_where=text("result_expired_at IS NULL"),
              sqlite_where=text("result_expired_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    model: Mapped[str] = mapped_column(String(40))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    postprocess: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the webhook events it wants (models/webhooks.py: "started", "completed"); null: the default, completed only
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # live previews while it denoises (worker/preview.py); false: the job asked for none
    preview: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    sweep_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_stage: Mapped[str | None] = mapped_column(String(20), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    runtime: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(60), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # sha256 of image bytes, model, resolved params (seed included), output and postprocess
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # indexed: the retention pass keeps a result while a job that reused it is recent
    reused_from: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    rerun_of: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # a transient failure puts the job back in the queue, to run again no earlier than this
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # for a sweep's cell: its swept values ({"motion_bucket_id": 180}) and its place in axis order
    sweep_cell: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sweep_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # when the retention pass deleted the result's objects (SVDQ_RESULT_RETENTION_S); `result` stays as the record
    result_expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # indexed: the retention pass deletes keys older than SVDQ_IDEMPOTENCY_RETENTION_S
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class JobCounter(Base):
    """Jobs that reached each terminal status, per model: the source of `svdq_jobs_finished_total`. Added to in the
    transaction that makes a job terminal (models/job_counts.py), never taken from, so it only rises. A few rows
    (shards) per (model, status) keep concurrent finishers from queueing on one row lock."""

    __tablename__ = "job_counters"

    model: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class Sweep(Base):
    """A parameter study: every image x the product of the axes, each cell an ordinary job."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(40))
    # images (ids, in order), base params (seed resolved), axes, output, postprocess, priority
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    total: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # as Job.webhook_events


class SweepGrid(Base):
    """One comparison video per image of a sweep: pending -> composing -> done | failed; done -> expired when the
    retention pass deleted its objects."""

    __tablename__ = "sweep_grids"
    # the retention pass: composed grids, oldest first (worker/retention.py)
    __table_args__ = (Index("ix_sweep_grids_status_updated", "status", "updated_at"),)

    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id"), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    video_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    poster_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook URL. Its id is derived from (resource, event), so an event is recorded once
    however many processes see the terminal status, and every retry carries the same webhook-id."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    resource_id: Mapped[str] = mapped_column(String(40), index=True)
    event: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
