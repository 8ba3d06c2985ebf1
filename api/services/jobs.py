"""Jobs: submit (capacity, idempotency, the image, reuse of an identical result), rerun, cancel, read, list."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, Engine, Table, insert, or_, select
from sqlalchemy.orm import Session

from api import idempotency
from api.errors import ApiError
from api.quotas import check_capacity
from api.services.images import fetch_url, get_image, store_image
from api.services.plans import JobPlan, fingerprint, plan_job
from api.state import AppState
from models import lifecycle
from models.job_counts import count_finished
from models.presence import ready_workers
from models.requests import JobCreate, JobSpec
from models.retention import reusable_since
from models.status import TERMINAL, JobStatus
from models.tables import ApiKey, Image, Job, utcnow

log = logging.getLogger("svdq.api")
JOBS = cast(Table, Job.__table__)


def reusable_result(*, state: AppState, session: Session, key: ApiKey, model: str, fp: str) -> Job | None:
    """A succeeded job of this key with the same fingerprint, rendered by the revision the ready workers
    hold now, still stored. With no worker ready the revision cannot be confirmed, so nothing is reused."""
    revisions = state.revisions.get(model)
    if revisions is None:
        try:
            workers = ready_workers(state.redis, model)
        except Exception:  # noqa: BLE001 - Redis down: render afresh rather than guess
            return None
        revisions = state.revisions.put(model, frozenset(w["revision"] for w in workers if w.get("revision")))
    if not revisions:
        return None
    stored: list[ColumnElement[bool]] = [Job.result_expired_at.is_(None)]
    since = reusable_since(state.settings.result_retention_s)
    if since is not None:  # well inside its retention: one the maintenance pass may be deleting is rendered afresh
        stored.append(or_(Job.finished_at > since, Job.finished_at.is_(None)))  # the pass never takes one without
    rows = session.scalars(select(Job).where(Job.owner_id == key.id, Job.fingerprint == fp,
                                             Job.status == JobStatus.SUCCEEDED, Job.reused_from.is_(None), *stored)
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
              sweep_id=sweep_id, sweep_cell=sweep_cell, sweep_index=sweep_index, webhook_url=plan.webhook_url,
              webhook_events=plan.webhook_events, preview=plan.preview)
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


_INSERT_JOB = insert(JOBS)


def insert_job(session: Session, job: Job) -> None:
    """The row of a new, unsaved job, as one Core INSERT built once (the unit of work's bookkeeping, or a fresh
    `.values()`, costs more than the statement); its unset columns stay SQL NULL, as the ORM leaves them. `job`
    stays a plain, transient object.

    When this session holds no transaction (the usual submit: the key, the image and the capacity came from
    caches and Redis), the INSERT is a statement of its own in autocommit on a pooled connection: one round trip
    instead of BEGIN, INSERT and COMMIT, for about half the API's CPU. Otherwise it joins the session's
    transaction and commits with it, all or nothing."""
    row = {c.key: v for c in JOBS.columns if (v := getattr(job, c.key)) is not None}
    if job.status in TERMINAL:  # born ended (a reused result): counted in its INSERT's transaction
        session.execute(_INSERT_JOB, row)
        count_finished(session, model=job.model, status=job.status, job_id=job.id)
        session.commit()
        return
    if session.in_transaction():
        session.execute(_INSERT_JOB, row)
        session.commit()
        return
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(_INSERT_JOB, row)


class Created(NamedTuple):
    """A job a request made, or (created=False) the one an earlier request with its Idempotency-Key made;
    `position` is its queue position as it went in, None when unknown (the view then reads it)."""

    job: Job
    created: bool = True
    position: int | None = None


def create_job(*, state: AppState, session: Session, key: ApiKey, plan: JobPlan, image: Image,
               rerun_of: str | None = None) -> Created:
    job = new_job(state=state, session=session, key=key, plan=plan, image=image, rerun_of=rerun_of)
    insert_job(session, job)
    if job.status != JobStatus.QUEUED:
        lifecycle.job_ended(session, job.id, state.fx)  # reused: it is already done
        return Created(job)
    sent = lifecycle.submitted(session, job, state.fx)
    if not sent:
        raise queue_unavailable()
    return Created(job, position=sent.position)


def submit_job(*, state: AppState, session: Session, key: ApiKey, spec: JobCreate | JobSpec, data: bytes | None,
               idem_key: str | None) -> Created:
    """A new job from a checked request, or the one an earlier request with the same Idempotency-Key and body
    made. `data` is the uploaded image; otherwise the spec names it."""
    plan = plan_job(spec, default_model=state.settings.default_model,
                    allow_private_urls=state.settings.allow_private_urls, learned=state.settings.learned_stages())
    check_capacity(state, session, key=key, model=plan.model, new_jobs=1)
    if idem_key is not None:
        digest = idempotency.request_hash({"spec": spec.model_dump(mode="json"),
                                           "image": hashlib.sha256(data).hexdigest() if data else None})
        existing = idempotency.claim(session, owner_id=key.id, key=idem_key, digest=digest,
                                     retention_s=state.settings.idempotency_retention_s)
        if existing is not None:
            return Created(get_job(session=session, key=key, job_id=existing), created=False)
    try:
        if data is None and isinstance(spec, JobCreate) and spec.image_url is not None:
            data = fetch_url(state, spec.image_url)
        if data is not None:
            image, _ = store_image(state=state, session=session, key=key, data=data)
        else:
            assert isinstance(spec, JobCreate)  # a JSON body names its image (api/bodies.py checks it)
            image = get_image(state=state, session=session, key=key, image_id=spec.image_id or "")
        made = create_job(state=state, session=session, key=key, plan=plan, image=image)
    except BaseException:
        if idem_key is not None:
            idempotency.release(session, owner_id=key.id, key=idem_key)
        raise
    if idem_key is not None:
        idempotency.complete(session, owner_id=key.id, key=idem_key, resource_id=made.job.id)
    return made


def rerun_job(*, state: AppState, session: Session, key: ApiKey, job: Job) -> Created:
    """The same image, params and seed rendered again (never reused): a faithful replay."""
    image = session.get(Image, job.image_id)
    assert image is not None
    plan = JobPlan(model=job.model, params=dict(job.params), output=dict(job.output), priority=job.priority,
                   postprocess=job.postprocess, reuse=False, webhook_url=job.webhook_url,
                   webhook_events=job.webhook_events, preview=job.preview)
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
