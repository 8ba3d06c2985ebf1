"""Keyword-only service functions the routers call: images, jobs, views of them."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.state import AppState
from models.events import JobSignals
from models.fetch import FetchError, fetch_image_url
from models.images import ImageRejected, clean_image
from models.netcheck import UrlRejected, check_url
from models.params import FieldError, JobSpec, pydantic_errors, resolve_output, resolve_params
from models.postprocess import validate_postprocess
from models.presence import ready_workers
from models.queue import make_enqueue
from models.registry import REGISTRY, get_spec
from models.states import fail_job, request_cancel
from models.status import JobStatus
from models.storage import LocalStore, S3Store, StorageError, image_key
from models.tables import ApiKey, Image, Job, utcnow
from models.webhooks import job_ended

log = logging.getLogger("svdq.api")
SpecT = TypeVar("SpecT", bound=BaseModel)


def invalid(details: list[FieldError], message: str = "Some parameters are invalid; see details.") -> ApiError:
    return ApiError(422, "invalid_params", message, [d.model_dump() for d in details])


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


# images ---------------------------------------------------------------------------------------------

def image_view(img: Image) -> dict[str, Any]:
    return {"id": img.id, "width": img.width, "height": img.height, "content_type": img.content_type,
            "bytes": img.bytes, "sha256": img.sha256, "created_at": iso(img.created_at)}


def store_image(*, state: AppState, session: Session, key: ApiKey, data: bytes) -> tuple[Image, bool]:
    """Clean and store an upload; the same bytes from the same key give the same image (created=False)."""
    try:
        clean = clean_image(data, max_pixels=state.settings.max_image_pixels)
    except ImageRejected as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    image_id = "img_" + hashlib.sha256(f"{key.id}:{clean.source_sha256}".encode()).hexdigest()[:24]
    existing = session.get(Image, image_id)
    if existing is not None:
        return existing, False
    skey = image_key(image_id)
    try:
        state.store.put(skey, clean.png, "image/png")
    except StorageError as exc:
        raise ApiError(503, "storage_unavailable", "Storage is not answering; try again shortly.") from exc
    img = Image(id=image_id, owner_id=key.id, sha256=clean.source_sha256, width=clean.width,
                height=clean.height, content_type="image/png", bytes=len(clean.png), storage_key=skey,
                created_at=utcnow())
    session.add(img)
    session.commit()
    return img, True


def fetch_url(state: AppState, url: str) -> bytes:
    """The bytes behind an image_url, fetched SSRF-safely (see models.fetch)."""
    try:
        return fetch_image_url(url, max_bytes=state.settings.max_upload_bytes,
                               allow_private=state.settings.allow_private_urls)
    except FetchError as exc:
        raise ApiError(exc.status, exc.code, exc.message, [{"field": "image_url", "message": exc.message}]) from exc


def get_image(*, session: Session, key: ApiKey, image_id: str) -> Image:
    img = session.get(Image, image_id)
    if img is None or (img.owner_id != key.id and not key.is_admin):
        raise ApiError(404, "not_found", f"No image {image_id!r}; upload it with POST /v1/images.")
    return img


# jobs -----------------------------------------------------------------------------------------------

def parse_body(model: type[SpecT], raw: Any, what: str) -> SpecT:
    """A request body into its spec model; every wrong or unknown field becomes a 422 detail."""
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid_request", f"The {what} spec must be a JSON object.")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise invalid(pydantic_errors(exc, "")) from exc


def parse_spec(raw: Any) -> JobSpec:
    return parse_body(JobSpec, raw, "job")


@dataclass(frozen=True)
class JobPlan:
    """A job request that passed every check; nothing is stored until it exists."""

    model: str
    params: dict[str, Any]
    output: dict[str, Any]
    priority: int
    postprocess: dict[str, Any] | None = None
    reuse: bool = True
    webhook_url: str | None = None


def webhook_errors(url: str | None, *, allow_private: bool, field: str = "webhook_url") -> list[FieldError]:
    if url is None:
        return []
    try:
        check_url(url, allow_private=allow_private)
    except UrlRejected as exc:
        return [FieldError(field=field, message=str(exc))]
    return []


def plan_postprocess(raw: dict[str, Any] | None, params: dict[str, Any], *,
                     learned: frozenset[str] | None = None) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """The job's post-processing stages, checked against its resolved render size and fps and, when given,
    the stages with learned weights configured (Settings.learned_stages: API and workers share settings)."""
    if not raw:
        return None, []
    spec, errors = validate_postprocess(raw, render_fps=params["fps"], width=params["width"], height=params["height"],
                                        learned=learned)
    post = spec.model_dump(exclude_none=True) if spec is not None else None
    return post, [FieldError(field=f, message=m) for f, m in errors]


def plan_job(spec: JobSpec, *, allow_private_urls: bool = False, learned: frozenset[str] | None = None) -> JobPlan:
    model = get_spec(spec.model)
    if model is None:
        raise invalid([FieldError(field="model", message=f"unknown model {spec.model!r}; "
                                  f"choose one of {', '.join(REGISTRY)}")])
    params, errors = resolve_params(model, spec.params)
    output, oerr = resolve_output(spec.output)
    errors += oerr
    if not 0 <= spec.priority <= 9:
        errors.append(FieldError(field="priority", message=f"must be between 0 and 9, got {spec.priority}"))
    post = None
    if not errors:
        post, pp_errors = plan_postprocess(spec.postprocess, params, learned=learned)
        errors += pp_errors
    errors += webhook_errors(spec.webhook_url, allow_private=allow_private_urls)
    if errors:
        raise invalid(errors)
    return JobPlan(model=model.name, params=params, output=output, priority=spec.priority, postprocess=post,
                   reuse=spec.reuse, webhook_url=spec.webhook_url)


def fingerprint(image: Image, plan: JobPlan) -> str:
    """What a render's bytes depend on, less the model revision (checked against the workers at reuse)."""
    doc = {"image": image.sha256, "model": plan.model, "params": plan.params, "output": plan.output,
           "postprocess": plan.postprocess}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def reusable_result(*, state: AppState, session: Session, key: ApiKey, model: str, fp: str) -> Job | None:
    """A succeeded job of this key with the same fingerprint, rendered by the revision the ready workers
    hold now. With no worker ready the revision cannot be confirmed, so nothing is reused."""
    try:
        revisions = {w.get("revision") for w in ready_workers(state.redis, model)} - {None}
    except Exception:  # noqa: BLE001 - Redis down: render afresh rather than guess
        return None
    if not revisions:
        return None
    rows = session.scalars(select(Job).where(Job.owner_id == key.id, Job.fingerprint == fp,
                                             Job.status == JobStatus.SUCCEEDED, Job.reused_from.is_(None))
                           .order_by(Job.created_at.desc()).limit(5))
    return next((j for j in rows if (j.runtime or {}).get("revision") in revisions), None)


def create_job(*, state: AppState, session: Session, key: ApiKey, plan: JobPlan, image: Image,
               rerun_of: str | None = None) -> Job:
    job = new_job(state=state, session=session, key=key, plan=plan, image=image, rerun_of=rerun_of)
    session.add(job)
    session.commit()
    if job.status == JobStatus.QUEUED:
        enqueue(state=state, session=session, job=job)
    else:
        job_ended(session, job.id)  # reused: it is already done
    return job


def new_job(*, state: AppState, session: Session, key: ApiKey, plan: JobPlan, image: Image,
            rerun_of: str | None = None, sweep_id: str | None = None, sweep_cell: dict[str, Any] | None = None,
            sweep_index: int | None = None) -> Job:
    """An unsaved job row: queued, or already succeeded when an identical render can be reused."""
    fp = fingerprint(image, plan)
    source = reusable_result(state=state, session=session, key=key, model=plan.model, fp=fp) if plan.reuse else None
    now = utcnow()
    job = Job(id="job_" + secrets.token_hex(12), owner_id=key.id, status=JobStatus.QUEUED, model=plan.model,
              image_id=image.id, params=plan.params, output=plan.output, postprocess=plan.postprocess,
              priority=plan.priority, attempts=0, progress_step=0,
              progress_total=plan.params["num_inference_steps"], created_at=now, fingerprint=fp, rerun_of=rerun_of,
              sweep_id=sweep_id, sweep_cell=sweep_cell, sweep_index=sweep_index, webhook_url=plan.webhook_url)
    if source is not None:
        # the same inputs, seed and weights already rendered: finish now from the stored result
        job.status, job.result, job.reused_from = JobStatus.SUCCEEDED, source.result, source.id
        job.runtime = {**(source.runtime or {}), "reused_from": source.id}
        job.started_at = job.finished_at = now
        job.progress_step, job.progress_stage = job.progress_total, "done"
    return job


def rerun_job(*, state: AppState, session: Session, key: ApiKey, job: Job) -> Job:
    """The same image, params and seed rendered again (never reused): a faithful replay."""
    image = session.get(Image, job.image_id)
    assert image is not None
    plan = JobPlan(model=job.model, params=dict(job.params), output=dict(job.output), priority=job.priority,
                   postprocess=job.postprocess, reuse=False, webhook_url=job.webhook_url)
    return create_job(state=state, session=session, key=key, plan=plan, image=image, rerun_of=job.id)


def enqueue(*, state: AppState, session: Session, job: Job) -> None:
    state.signals.queued(job.model, job.id, job.priority, job.created_at)
    try:
        make_enqueue(state.celery)(job.id, job.model, job.priority, 0.0)
    except Exception as exc:
        log.error("enqueue of %s failed: %s", job.id, exc, extra={"job_id": job.id})
        if fail_job(session, job_id=job.id, worker=None, code="queue_unavailable",
                    message="The job queue (Redis) did not accept the job; submit it again."):
            job_ended(session, job.id)
        state.signals.dequeued(job.model, job.id)
        raise ApiError(503, "queue_unavailable", "The job queue is not answering; try again shortly.",
                       headers={"Retry-After": "5"}) from exc


def cancel_job(*, state: AppState, session: Session, key: ApiKey, job_id: str) -> tuple[Job, str]:
    job = get_job(session=session, key=key, job_id=job_id)
    outcome = request_cancel(session, job_id=job.id)
    if outcome is None:
        session.refresh(job)
        raise ApiError(409, "job_finished", f"Job {job.id} already ended ({job.status}); there is nothing to cancel.")
    if outcome == "requested":
        # the worker checks this flag at every denoising step; the row's flag backs it up if Redis is lost
        state.signals.request_cancel(job.id)
    else:
        state.signals.dequeued(job.model, job.id)
        state.signals.publish(job.id, {"type": "status", "status": "canceled"})
        job_ended(session, job.id)
    session.refresh(job)
    return job, outcome


def get_job(*, session: Session, key: ApiKey, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or (job.owner_id != key.id and not key.is_admin):
        raise ApiError(404, "not_found", f"No job {job_id!r}.")
    return job


def queue_position(state: ViewDeps, session: Session, job: Job) -> int:
    """0 = next. Read from the Redis queue index (O(log n)); counted in SQL only when Redis lacks the job."""
    rank = state.signals.position(job.model, job.id)
    if rank is not None:
        return rank
    ahead = session.scalar(
        select(func.count()).select_from(Job).where(
            Job.model == job.model, Job.status == JobStatus.QUEUED,
            or_(Job.priority > job.priority, and_(Job.priority == job.priority, Job.created_at < job.created_at)),
        )
    )
    return int(ahead or 0)


class ViewDeps(Protocol):
    """What building a job or sweep object needs: the API's AppState, or a worker's sender."""

    @property
    def store(self) -> LocalStore | S3Store: ...

    @property
    def signals(self) -> JobSignals: ...


def job_view(*, state: ViewDeps, session: Session, job: Job, base_url: str) -> dict[str, Any]:
    total = job.progress_total or job.params.get("num_inference_steps", 0)
    step = total if job.status == JobStatus.SUCCEEDED else job.progress_step
    view: dict[str, Any] = {
        "id": job.id, "status": job.status, "model": job.model, "image_id": job.image_id,
        "params": job.params, "output": job.output, "postprocess": job.postprocess, "priority": job.priority,
        "queue_position": queue_position(state, session, job) if job.status == JobStatus.QUEUED else None,
        "progress": {"step": step, "total": total, "fraction": round(step / total, 4) if total else 0.0,
                     "stage": job.progress_stage},
        "attempts": job.attempts, "worker": job.worker, "sweep_id": job.sweep_id,
        "sweep_cell": job.sweep_cell, "sweep_index": job.sweep_index,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        "result": None, "error": None, "runtime": job.runtime,
        "cancel_requested": job.cancel_requested_at is not None, "reused_from": job.reused_from,
        "rerun_of": job.rerun_of,
    }
    if job.status == JobStatus.SUCCEEDED and job.result:
        r = job.result
        video_url = state.store.presigned_url(r["video_key"], r["content_type"]) or f"{base_url}/v1/jobs/{job.id}/video"
        poster_url = state.store.presigned_url(r["poster_key"], "image/jpeg") or f"{base_url}/v1/jobs/{job.id}/poster"
        view["result"] = {"video_url": video_url, "poster_url": poster_url,
                          **{k: r[k] for k in ("content_type", "bytes", "sha256", "frames", "width", "height", "fps")}}
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED) or (job.status == JobStatus.QUEUED and job.error_code):
        view["error"] = {"code": job.error_code, "message": job.error_message}
    return view


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_request", "The cursor is not one this API gave out; start without it.") from exc


def list_jobs(*, session: Session, key: ApiKey, status: str | None, sweep_id: str | None, limit: int,
              cursor: str | None) -> tuple[list[Job], str | None]:
    if status is not None and status not in set(JobStatus):
        raise ApiError(422, "invalid_request", f"Unknown status {status!r}; use one of "
                       f"{', '.join(s.value for s in JobStatus)}.")
    if not 1 <= limit <= 200:
        raise ApiError(422, "invalid_request", "limit must be between 1 and 200.")
    q = select(Job)
    if not key.is_admin:
        q = q.where(Job.owner_id == key.id)
    if status is not None:
        q = q.where(Job.status == status)
    if sweep_id is not None:
        q = q.where(Job.sweep_id == sweep_id)
    if cursor:
        created, job_id = decode_cursor(cursor)
        q = q.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)))
    rows = list(session.scalars(q.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]) if more and rows else None)


@dataclass(frozen=True)
class SenderDeps:
    store: LocalStore | S3Store
    signals: JobSignals


def webhook_payload(store: LocalStore | S3Store, base_url: str) -> Any:
    """The object a webhook carries: the job (or sweep) as GET returns it, URLs on `base_url`."""
    from api.sweeps import sweep_view
    from models.tables import Sweep, WebhookDelivery

    deps = SenderDeps(store=store, signals=JobSignals(None))

    def payload(session: Session, d: WebhookDelivery) -> dict[str, Any] | None:
        if d.resource_id.startswith("swp_"):
            sweep = session.get(Sweep, d.resource_id)
            return None if sweep is None else sweep_view(state=deps, session=session, sweep=sweep, base_url=base_url)
        job = session.get(Job, d.resource_id)
        return None if job is None else job_view(state=deps, session=session, job=job, base_url=base_url)

    return payload
