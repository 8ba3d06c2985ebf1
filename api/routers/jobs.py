from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from api.deps import CurrentKey, SessionDep, StateDep
from api.errors import ApiError
from api.routers.images import read_upload
from api.services import create_job, get_image, get_job, job_view, list_jobs, parse_spec, plan_job, store_image
from models.params import FieldError
from models.states import JobStatus

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


@router.post("", status_code=202, openapi_extra=CREATE_SCHEMA)
async def submit_job(request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> JSONResponse:
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
        plan = plan_job(spec)
        image, _ = store_image(state=state, session=session, key=key, data=data)
    elif ctype.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(422, "invalid_request", "The body is not valid JSON.") from exc
        spec = parse_spec(body)
        if spec.image_url is not None:
            raise ApiError(422, "invalid_params", "image_url is not supported on this server yet; upload the "
                           "image with POST /v1/images and send its image_id.",
                           [FieldError(field="image_url", message="not supported yet").model_dump()])
        if not spec.image_id:
            raise ApiError(422, "invalid_request", "Name the image: give image_id (from POST /v1/images), "
                           "or send multipart/form-data with an 'image' file part.",
                           [FieldError(field="image_id", message="required").model_dump()])
        plan = plan_job(spec)
        image = get_image(session=session, key=key, image_id=spec.image_id)
    else:
        raise ApiError(415, "unsupported_media_type",
                       "Send application/json (with image_id) or multipart/form-data (with an 'image' part).")
    job = create_job(state=state, session=session, key=key, plan=plan, image=image)
    return JSONResponse(job_view(state=state, session=session, job=job, base_url=base_url(request)),
                        status_code=202)


@router.get("")
def jobs_list(request: Request, state: StateDep, session: SessionDep, key: CurrentKey,
              status: str | None = None, sweep_id: str | None = None, limit: int = 50,
              cursor: str | None = None) -> dict[str, Any]:
    rows, next_cursor = list_jobs(session=session, key=key, status=status, sweep_id=sweep_id, limit=limit,
                                  cursor=cursor)
    base = base_url(request)
    return {"items": [job_view(state=state, session=session, job=j, base_url=base) for j in rows],
            "next_cursor": next_cursor}


@router.get("/{job_id}")
def job_detail(job_id: str, request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> dict[str, Any]:
    job = get_job(session=session, key=key, job_id=job_id)
    return job_view(state=state, session=session, job=job, base_url=base_url(request))


def _serve(state: StateDep, storage_key: str, content_type: str) -> Response:
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


@router.get("/{job_id}/video", response_class=Response)
def job_video(job_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    r = _finished(session, key, job_id)
    return _serve(state, r["video_key"], r["content_type"])


@router.get("/{job_id}/poster", response_class=Response)
def job_poster(job_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    r = _finished(session, key, job_id)
    return _serve(state, r["poster_key"], "image/jpeg")
