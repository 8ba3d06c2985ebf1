from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api import idempotency
from api.deps import CurrentKey, SessionDep, StateDep
from api.docs import answers
from api.errors import ApiError
from api.idempotency import request_hash
from api.limits_redis import check_capacity
from api.routers.images import read_upload
from api.services import (
    cancel_job,
    create_job,
    fetch_url,
    get_image,
    get_job,
    iso,
    job_view,
    list_jobs,
    parse_spec,
    plan_job,
    rerun_job,
    store_image,
)
from api.sse import job_event_stream
from api.state import AppState
from models import schemas
from models.params import FieldError, JobSpec
from models.status import JobStatus
from models.tables import ApiKey, WebhookDelivery

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

SPEC_PROPS: dict[str, Any] = {
    "model": {"type": "string"}, "params": {"type": "object"}, "output": {"type": "object"},
    "priority": {"type": "integer", "minimum": 0, "maximum": 9}, "image_id": {"type": "string"},
}
CREATE_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "properties": SPEC_PROPS}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"},
        "spec": {"type": "string", "description": "JSON job spec: model, params, output, priority"}}}},
}}}


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _read_submission(request: Request) -> tuple[JobSpec, bytes | None]:
    """The spec and, for multipart, the image bytes: parsed and checked before anything is stored."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        data, form = await read_upload(request)
        raw_spec = form.get("spec")
        try:
            spec_obj = json.loads(raw_spec) if isinstance(raw_spec, str) and raw_spec.strip() else {}
        except json.JSONDecodeError as exc:
            raise ApiError(422, "invalid_request", f"The 'spec' part is not valid JSON: {exc.msg}.") from exc
        spec = parse_spec(spec_obj)
        if spec.image_id or spec.image_url:
            raise ApiError(422, "invalid_params", "Send either an image file or image_id, not both.",
                           [{"field": "image_id", "message": "not allowed with a file part"}])
        return spec, data
    if ctype.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(422, "invalid_request", "The body is not valid JSON.") from exc
        spec = parse_spec(body)
        if spec.image_url is not None and spec.image_id:
            raise ApiError(422, "invalid_params", "Give either image_id or image_url, not both.",
                           [FieldError(field="image_url", message="not allowed with image_id").model_dump()])
        if not spec.image_id and spec.image_url is None:
            raise ApiError(422, "invalid_request", "Name the image: give image_id (from POST /v1/images) or "
                           "image_url, or send multipart/form-data with an 'image' file part.",
                           [FieldError(field="image_id", message="required").model_dump()])
        return spec, None
    raise ApiError(415, "unsupported_media_type",
                   "Send application/json (with image_id) or multipart/form-data (with an 'image' part).")


def _submit(*, state: AppState, session: Session, key: ApiKey, spec: JobSpec, data: bytes | None,
            idem_key: str | None, base: str) -> tuple[dict[str, Any], int]:
    plan = plan_job(spec, allow_private_urls=state.settings.allow_private_urls,
                    learned=state.settings.learned_stages())
    check_capacity(state, session, key=key, model=plan.model, new_jobs=1)
    if idem_key is not None:
        digest = request_hash({"spec": spec.model_dump(), "image": hashlib.sha256(data).hexdigest() if data else None})
        existing = idempotency.claim(session, owner_id=key.id, key=idem_key, digest=digest)
        if existing is not None:
            job = get_job(session=session, key=key, job_id=existing)
            return job_view(state=state, session=session, job=job, base_url=base), 200
    if data is None and spec.image_url is not None:
        data = fetch_url(state, spec.image_url)
    try:
        if data is not None:
            image, _ = store_image(state=state, session=session, key=key, data=data)
        else:
            image = get_image(session=session, key=key, image_id=spec.image_id or "")
        job = create_job(state=state, session=session, key=key, plan=plan, image=image)
    except BaseException:
        if idem_key is not None:
            idempotency.release(session, owner_id=key.id, key=idem_key)
        raise
    if idem_key is not None:
        idempotency.complete(session, owner_id=key.id, key=idem_key, resource_id=job.id)
    return job_view(state=state, session=session, job=job, base_url=base), 202


@router.post("", status_code=202, openapi_extra=CREATE_SCHEMA,
             responses=answers(202, schemas.Job, "The job, queued (or finished at once from a reused result).",
                               404, 409, 413, 415, 422))
async def submit_job(request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> JSONResponse:
    idem = request.headers.get("idempotency-key")
    idem_key = idempotency.check_key(idem) if idem is not None else None
    spec, data = await _read_submission(request)
    body, status = await run_in_threadpool(_submit, state=state, session=session, key=key, spec=spec, data=data,
                                           idem_key=idem_key, base=base_url(request))
    return JSONResponse(body, status_code=status)


@router.get("", response_model=None, responses=answers(200, schemas.Page[schemas.Job], "Newest first.", 422))
def jobs_list(request: Request, state: StateDep, session: SessionDep, key: CurrentKey,
              status: str | None = None, sweep_id: str | None = None, limit: int = 50,
              cursor: str | None = None) -> dict[str, Any]:
    rows, next_cursor = list_jobs(session=session, key=key, status=status, sweep_id=sweep_id, limit=limit,
                                  cursor=cursor)
    base = base_url(request)
    return {"items": [job_view(state=state, session=session, job=j, base_url=base) for j in rows],
            "next_cursor": next_cursor}


@router.get("/{job_id}", response_model=None, responses=answers(200, schemas.Job, "The job.", 404))
def job_detail(job_id: str, request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> dict[str, Any]:
    job = get_job(session=session, key=key, job_id=job_id)
    return job_view(state=state, session=session, job=job, base_url=base_url(request))


def serve_stored(state: StateDep, storage_key: str, content_type: str) -> Response:
    url = state.store.presigned_url(storage_key, content_type)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    path = state.store.local_path(storage_key)
    if path is None or not path.is_file():
        raise ApiError(404, "not_found", "The stored file is missing.")
    return FileResponse(path, media_type=content_type, headers={"X-Content-Type-Options": "nosniff"})


def _finished(session: SessionDep, key: CurrentKey, job_id: str) -> dict[str, Any]:
    job = get_job(session=session, key=key, job_id=job_id)
    if job.status != JobStatus.SUCCEEDED or not job.result:
        raise ApiError(409, "job_not_finished", f"Job {job_id} is {job.status}; its video exists once it "
                       "has succeeded.")
    return job.result


@router.post("/{job_id}/cancel", responses={
    **answers(200, schemas.Job, "It was queued: canceled now.", 404, 409),
    202: {"model": schemas.Job, "description": "It is running: it stops at its next step."}})
def cancel(job_id: str, request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> JSONResponse:
    job, outcome = cancel_job(state=state, session=session, key=key, job_id=job_id)
    view = job_view(state=state, session=session, job=job, base_url=base_url(request))
    # canceled now (it was queued) -> 200; a running job stops at its next step -> 202
    return JSONResponse(view, status_code=200 if outcome == "canceled" else 202)


@router.post("/{job_id}/rerun", status_code=202,
             responses=answers(202, schemas.Job, "The new job, queued.", 404, 409))
def rerun(job_id: str, request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> JSONResponse:
    job = rerun_job(state=state, session=session, key=key, job=get_job(session=session, key=key, job_id=job_id))
    return JSONResponse(job_view(state=state, session=session, job=job, base_url=base_url(request)), status_code=202)


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "job objects as SSE"}})
def events(job_id: str, request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> StreamingResponse:
    get_job(session=session, key=key, job_id=job_id)  # 404 before the stream starts
    base = base_url(request)

    def load_view() -> dict[str, Any]:
        with state.sessions() as s:
            return job_view(state=state, session=s, job=get_job(session=s, key=key, job_id=job_id), base_url=base)

    return StreamingResponse(job_event_stream(state.aredis, job_id, load_view, request.is_disconnected),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/webhooks")
def job_webhooks(job_id: str, session: SessionDep, key: CurrentKey) -> dict[str, Any]:
    """The job's webhook delivery log: each event with its stable id, attempts, status and last error."""
    get_job(session=session, key=key, job_id=job_id)
    rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.resource_id == job_id)
                           .order_by(WebhookDelivery.created_at))
    return {"items": [{"id": d.id, "event": d.event, "url": d.url, "status": d.status, "attempts": d.attempts,
                       "last_error": d.last_error, "next_attempt_at": iso(d.next_attempt_at),
                       "delivered_at": iso(d.delivered_at), "created_at": iso(d.created_at)} for d in rows]}


@router.get("/{job_id}/video", response_class=Response)
def job_video(job_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    r = _finished(session, key, job_id)
    return serve_stored(state, r["video_key"], r["content_type"])


@router.get("/{job_id}/poster", response_class=Response)
def job_poster(job_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    r = _finished(session, key, job_id)
    return serve_stored(state, r["poster_key"], "image/jpeg")
