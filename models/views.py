"""Jobs, sweeps and images as the API answers them and webhooks carry them: rows in, the typed shapes of
models/schemas.py out. The API's routes and the workers' webhook sender build their objects here, so a webhook
body is exactly what GET returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from models import schemas
from models import sweeps as sw
from models.events import JobSignals
from models.status import TERMINAL, JobStatus
from models.storage import LocalStore, S3Store
from models.tables import Image, Job, Sweep, SweepGrid, UTCDateTime, WebhookDelivery
from models.webhooks import event_filter


class ViewDeps(Protocol):
    """What building a view needs: where results are stored (for their URLs) and the queue index (positions)."""

    @property
    def store(self) -> LocalStore | S3Store: ...

    @property
    def signals(self) -> JobSignals: ...


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


def image_view(img: Image) -> schemas.Image:
    return schemas.Image(id=img.id, width=img.width, height=img.height, content_type=img.content_type,
                         bytes=img.bytes, sha256=img.sha256, created_at=img.created_at)


def queue_position(deps: ViewDeps, session: Session | Connection, job: Any) -> int:
    """0 = next. Read from the Redis queue index (O(log n)); counted in SQL only when Redis lacks the job."""
    rank = deps.signals.position(job.model, job.id)
    return rank if rank is not None else sql_position(session, job)


_J = Job.__table__
# the jobs ahead of a queued one in its model's queue (higher priority first, then older first); its inputs are
# named parameters, so the API's async reader compiles it once (api/reads.py)
AHEAD_OF = select(func.count()).select_from(_J).where(
    _J.c.model == bindparam("model"), _J.c.status == JobStatus.QUEUED.value,
    or_(_J.c.priority > bindparam("priority"),
        and_(_J.c.priority == bindparam("priority"), _J.c.created_at < bindparam("created_at", type_=UTCDateTime))))


def ahead_params(job: Any) -> dict[str, Any]:
    return {"model": job.model, "priority": job.priority, "created_at": job.created_at}


def sql_position(session: Session | Connection, job: Any) -> int:
    """The jobs ahead of this queued one, counted in SQL: what the queue index says, when Redis has lost it."""
    return int(session.scalar(AHEAD_OF, ahead_params(job)) or 0)


def job_view(job: Any, *, store: LocalStore | S3Store, base_url: str, position: int | None = None) -> schemas.Job:
    """The job object of a row: an ORM `Job` or a Core row of the jobs table (the API's hot reads select those).
    `position` is its queue position when it is queued (see queue_position)."""
    total = job.progress_total or job.params.get("num_inference_steps", 0)
    step = total if job.status == JobStatus.SUCCEEDED else job.progress_step
    result = None
    if job.status == JobStatus.SUCCEEDED and job.result and job.result_expired_at is None:
        r = job.result
        own = f"{base_url}/v1/jobs/{job.id}"
        result = schemas.JobResult(
            video_url=store.presigned_url(r["video_key"], r["content_type"]) or f"{own}/video",
            poster_url=store.presigned_url(r["poster_key"], "image/jpeg") or f"{own}/poster",
            metrics=r.get("metrics"),
            **{k: r[k] for k in ("content_type", "bytes", "sha256", "frames", "width", "height", "fps")})
    error = None
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED) or (job.status == JobStatus.QUEUED and job.error_code):
        error = schemas.ErrorInfo(code=job.error_code, message=job.error_message)
    return schemas.Job(
        id=job.id, status=job.status, model=job.model, image_id=job.image_id, params=job.params, output=job.output,
        postprocess=job.postprocess, priority=job.priority,
        queue_position=position if job.status == JobStatus.QUEUED else None,
        progress=schemas.Progress(step=step, total=total, fraction=round(step / total, 4) if total else 0.0,
                                  stage=job.progress_stage),
        attempts=job.attempts, worker=job.worker, sweep_id=job.sweep_id, sweep_cell=job.sweep_cell,
        sweep_index=job.sweep_index, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, result=result, error=error, runtime=job.runtime,
        result_expired_at=job.result_expired_at,
        cancel_requested=job.cancel_requested_at is not None, reused_from=job.reused_from, rerun_of=job.rerun_of,
        webhook_events_filter=event_filter(job.webhook_events), preview=job.preview,
        preview_url=f"{base_url}/v1/jobs/{job.id}/preview" if job.preview and job.status == JobStatus.RUNNING
        else None)


def job_view_now(*, deps: ViewDeps, session: Session, job: Job, base_url: str,
                 position: int | None = None) -> schemas.Job:
    """job_view with its queue position read now (the sync callers: creates, cancels, pages of a sweep), unless
    the caller knows it already (a create: the enqueue's own)."""
    if position is None and job.status == JobStatus.QUEUED:
        position = queue_position(deps, session, job)
    return job_view(job, store=deps.store, base_url=base_url, position=position)


def sweep_view(*, deps: ViewDeps, session: Session, sweep: Sweep, base_url: str) -> schemas.Sweep:
    counts = sw.counts(session, sweep.id)
    grids = []
    for g in session.scalars(select(SweepGrid).where(SweepGrid.sweep_id == sweep.id).order_by(SweepGrid.position)):
        video_url = poster_url = None
        if g.status == "done" and g.video_key and g.poster_key:
            grid_url = f"{base_url}/v1/sweeps/{sweep.id}/grids/{g.image_id}"
            video_url = deps.store.presigned_url(g.video_key, "video/mp4") or grid_url + "/video"
            poster_url = deps.store.presigned_url(g.poster_key, "image/jpeg") or grid_url + "/poster"
        grids.append(schemas.SweepGrid(image_id=g.image_id, status=g.status, video_url=video_url,
                                       poster_url=poster_url, error=g.error))
    status = sw.status(sweep, counts)
    finished = None
    if status in TERMINAL:
        finished = session.scalar(select(Job.finished_at).where(Job.sweep_id == sweep.id)
                                  .order_by(Job.finished_at.desc()).limit(1))
    return schemas.Sweep(
        id=sweep.id, name=sweep.name, model=sweep.model, status=status, total=sweep.total, counts=counts,
        axes=sweep.spec["axes"], params=sweep.spec["params"], images=sweep.spec["images"],
        output=sweep.spec["output"], grids=grids, gallery_url=f"/ui/sweeps/{sweep.id}", created_at=sweep.created_at,
        finished_at=finished, canceled_at=sweep.canceled_at, webhook_events_filter=event_filter(sweep.webhook_events))


def delivery_view(d: WebhookDelivery) -> schemas.WebhookDelivery:
    return schemas.WebhookDelivery(id=d.id, event=d.event, url=d.url, status=d.status, attempts=d.attempts,
                                   last_error=d.last_error, next_attempt_at=d.next_attempt_at,
                                   delivered_at=d.delivered_at, created_at=d.created_at)


@dataclass(frozen=True)
class StoredResults:
    """A webhook sender's view dependencies: it knows where results are stored, and no queue positions (a
    terminal job has none)."""

    store: LocalStore | S3Store
    signals: JobSignals


Payload = Callable[[Session, WebhookDelivery], dict[str, Any] | None]


def webhook_payload(store: LocalStore | S3Store, base_url: str) -> Payload:
    """The object a webhook carries: the job (or sweep) as GET returns it, URLs on `base_url`."""
    deps = StoredResults(store=store, signals=JobSignals(None))

    def payload(session: Session, d: WebhookDelivery) -> dict[str, Any] | None:
        view: schemas.ApiModel | None
        if d.resource_id.startswith("swp_"):
            sweep = session.get(Sweep, d.resource_id)
            view = None if sweep is None else sweep_view(deps=deps, session=session, sweep=sweep, base_url=base_url)
        else:
            job = session.get(Job, d.resource_id)
            view = None if job is None else job_view_now(deps=deps, session=session, job=job, base_url=base_url)
        return None if view is None else view.model_dump(mode="json")

    return payload
