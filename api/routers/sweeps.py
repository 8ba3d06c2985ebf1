from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import CurrentKey, SessionDep, StateDep
from api.docs import answers
from api.errors import ApiError
from api.routers.jobs import base_url, serve_stored
from api.services import job_view, list_jobs
from api.sweeps import cancel_sweep, create_sweep, get_sweep, parse_sweep, sweep_view
from models import schemas
from models.tables import SweepGrid

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

CREATE_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "name": {"type": "string"}, "model": {"type": "string"}, "images": {"type": "array"},
        "params": {"type": "object"}, "axes": {"type": "object"}, "output": {"type": "object"}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "spec": {"type": "string", "description": "JSON sweep spec"}}}},
}}}


async def _read(request: Request) -> tuple[Any, list[bytes]]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=64, max_fields=16)
        uploads = [await part.read() for part in form.getlist("image") if isinstance(part, UploadFile)]
        raw = form.get("spec")
        try:
            return (json.loads(raw) if isinstance(raw, str) and raw.strip() else {}), uploads
        except json.JSONDecodeError as exc:
            raise ApiError(422, "invalid_request", f"The 'spec' part is not valid JSON: {exc.msg}.") from exc
    if ctype.startswith("application/json"):
        try:
            return json.loads(await request.body()), []
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(422, "invalid_request", "The body is not valid JSON.") from exc
    raise ApiError(415, "unsupported_media_type", "Send application/json, or multipart/form-data with 'image' "
                   "parts and a 'spec' part.")


@router.post("", status_code=202, openapi_extra=CREATE_SCHEMA,
             responses=answers(202, schemas.Sweep, "The sweep, its cells queued.", 404, 413, 415, 422))
async def submit_sweep(request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> JSONResponse:
    raw, uploads = await _read(request)
    spec = parse_sweep(raw)
    base = base_url(request)

    def create() -> dict[str, Any]:
        sweep = create_sweep(state=state, session=session, key=key, spec=spec, uploads=uploads)
        return sweep_view(state=state, session=session, sweep=sweep, base_url=base)

    return JSONResponse(await run_in_threadpool(create), status_code=202)


@router.get("/{sweep_id}", response_model=None, responses=answers(200, schemas.Sweep, "The sweep.", 404))
def sweep_detail(sweep_id: str, request: Request, state: StateDep, session: SessionDep,
                 key: CurrentKey) -> dict[str, Any]:
    sweep = get_sweep(session=session, key=key, sweep_id=sweep_id)
    return sweep_view(state=state, session=session, sweep=sweep, base_url=base_url(request))


@router.get("/{sweep_id}/jobs", response_model=None,
            responses=answers(200, schemas.Page[schemas.Job], "The sweep's cells, newest first.", 404, 422))
def sweep_jobs(sweep_id: str, request: Request, state: StateDep, session: SessionDep, key: CurrentKey,
               status: str | None = None, limit: int = 200, cursor: str | None = None) -> dict[str, Any]:
    get_sweep(session=session, key=key, sweep_id=sweep_id)
    rows, next_cursor = list_jobs(session=session, key=key, status=status, sweep_id=sweep_id, limit=limit,
                                  cursor=cursor)
    base = base_url(request)
    return {"items": [job_view(state=state, session=session, job=j, base_url=base) for j in rows],
            "next_cursor": next_cursor}


@router.post("/{sweep_id}/cancel", response_model=None,
             responses=answers(200, schemas.Sweep, "The sweep; its queued cells canceled.", 404, 409))
def sweep_cancel(sweep_id: str, request: Request, state: StateDep, session: SessionDep,
                 key: CurrentKey) -> dict[str, Any]:
    sweep = cancel_sweep(state=state, session=session, key=key, sweep_id=sweep_id)
    return sweep_view(state=state, session=session, sweep=sweep, base_url=base_url(request))


def _grid(session: SessionDep, key: CurrentKey, sweep_id: str, image_id: str) -> SweepGrid:
    get_sweep(session=session, key=key, sweep_id=sweep_id)
    grid = session.get(SweepGrid, (sweep_id, image_id))
    if grid is None or grid.status != "done":
        raise ApiError(404, "not_found", "No finished grid for that image yet; it is made once all its cells end.")
    return grid


@router.get("/{sweep_id}/grids/{image_id}/video", response_class=Response)
def grid_video(sweep_id: str, image_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    return serve_stored(state, _grid(session, key, sweep_id, image_id).video_key or "", "video/mp4")


@router.get("/{sweep_id}/grids/{image_id}/poster", response_class=Response)
def grid_poster(sweep_id: str, image_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    return serve_stored(state, _grid(session, key, sweep_id, image_id).poster_key or "", "image/jpeg")
