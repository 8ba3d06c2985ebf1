"""Jobs: submit (capacity, idempotency, the image, reuse of an identical result), rerun, cancel, read, list."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from api import idempotency
from api.errors import ApiError
from api.quotas import check_capacity
from api.services.images import fetch_url, get_image, store_image
from api.services.plans import JobPlan, fingerprint, plan_job
from api.state import AppState
from models import lifecycle
from models.presence import ready_workers
from models.requests import JobCreate, JobSpec
from models.status import JobStatus
from models.tables import ApiKey, Image, Job, utcnow

log = logging.getLogger("svdq.api")


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


def queue_unavailable() -> ApiError:
    return ApiError(503, "queue_unavailable", "The job queue is not answering; try again shortly.",
                    headers={"Retry-After": "5"})


def create_job(*, state: AppState, session: Session, key: ApiKey, plan: JobPlan, image: Image,
               rerun_of: str | None = None) -> Job:
    job = new_job(state=state, session=session, key=key, plan=plan, image=image, rerun_of=rerun_of)
    session.add(job)
    session.commit()
    if job.status != JobStatus.QUEUED:
        lifecycle.job_ended(session, job.id, state.fx)  # reused: it is already done
    elif not lifecycle.submitted(session, job, state.fx):
        raise queue_unavailable()
    return job


def submit_job(*, state: AppState, session: Session, key: ApiKey, spec: JobCreate | JobSpec, data: bytes | None,
               idem_key: str | None) -> tuple[Job, bool]:
    """A new job from a checked request, or (created=False) the one an earlier request with the same
    Idempotency-Key and body made. `data` is the uploaded image; otherwise the spec names it."""
    plan = plan_job(spec, allow_private_urls=state.settings.allow_private_urls,
                    learned=state.settings.learned_stages())
    check_capacity(state, session, key=key, model=plan.model, new_jobs=1)
    if idem_key is not None:
        digest = idempotency.request_hash({"spec": spec.model_dump(mode="json"),
                                           "image": hashlib.sha256(data).hexdigest() if data else None})
        existing = idempotency.claim(session, owner_id=key.id, key=idem_key, digest=digest)
        if existing is not None:
            return get_job(session=session, key=key, job_id=existing), False
    try:
        if data is None and isinstance(spec, JobCreate) and spec.image_url is not None:
            data = fetch_url(state, spec.image_url)
        if data is not None:
            image, _ = store_image(state=state, session=session, key=key, data=data)
        else:
            assert isinstance(spec, JobCreate)  # a JSON body names its image (api/bodies.py checks it)
            image = get_image(session=session, key=key, image_id=spec.image_id or "")
        job = create_job(state=state, session=session, key=key, plan=plan, image=image)
    except BaseException:
        if idem_key is not None:
            idempotency.release(session, owner_id=key.id, key=idem_key)
        raise
    if idem_key is not None:
        idempotency.complete(session, owner_id=key.id, key=idem_key, resource_id=job.id)
    return job, True


def rerun_job(*, state: AppState, session: Session, key: ApiKey, job: Job) -> Job:
    """The same image, params and seed rendered again (never reused): a faithful replay."""
    image = session.get(Image, job.image_id)
    assert image is not None
    plan = JobPlan(model=job.model, params=dict(job.params), output=dict(job.output), priority=job.priority,
                   postprocess=job.postprocess, reuse=False, webhook_url=job.webhook_url)
    return create_job(state=state, session=session, key=key, plan=plan, image=image, rerun_of=job.id)


def cancel_job(*, state: AppState, session: Session, key: ApiKey, job_id: str) -> tuple[Job, str]:
    job = get_job(session=session, key=key, job_id=job_id)
    outcome = lifecycle.cancel(session, job, state.fx)
    session.refresh(job)
    if outcome is None:
        raise ApiError(409, "job_finished", f"Job {job.id} already ended ({job.status}); there is nothing to cancel.")
    return job, outcome


def get_job(*, session: Session, key: ApiKey, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or (job.owner_id != key.id and not key.is_admin):
        raise ApiError(404, "not_found", f"No job {job_id!r}.")
    return job


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# `<created_at in microseconds since the epoch>.<job id>`: every string of this shape is a place in the newest-first
# order (the OpenAPI document publishes the pattern), so a cursor is either refused by its shape or served
CURSOR_PATTERN = r"^[0-9]{1,17}\.job_[0-9A-Za-z_]{1,64}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(job: Job) -> str:
    return f"{(job.created_at - EPOCH) // timedelta(microseconds=1)}.{job.id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not _CURSOR.match(cursor):
        raise ApiError(422, "invalid_request", "The cursor is not one this API gave out; start without it.")
    micros, job_id = cursor.split(".", 1)
    return EPOCH + timedelta(microseconds=int(micros)), job_id


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
