"""/v1/sweeps: the seed report's parameter studies as one request: create (JSON, or multipart with the images),
read, list its cells, cancel, and each image's comparison grid."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.auth import CurrentKey
from api.bodies import read_sweep_submission
from api.deps import BaseUrl, SessionDep, StateDep
from api.errors import ApiError
from api.files import FILE_ANSWERS, serve_stored
from api.openapi import add_create_routes, answers, failures, links
from api.reads import CURSOR_PATTERN, read_jobs_page
from api.services import sweeps
from models import schemas
from models.retention import EXPIRED, expired_message
from models.status import JobStatus
from models.tables import SweepGrid
from models.views import sweep_view

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

SWEEP_LINKS = {**links({"sweep_id": "$response.body#/id"}, "get_sweep", "list_sweep_jobs", "cancel_sweep"),
               **links({"sweep_id": "$response.body#/id", "image_id": "$response.body#/images/0"}, "grid_video",
                       "grid_poster")}
CREATED = answers(202, schemas.Sweep, "The sweep, its cells queued.", 404, 413, 415, 422, links=SWEEP_LINKS)


async def create_sweep(request: Request, state: StateDep, key: CurrentKey, base: BaseUrl) -> schemas.Sweep:
    spec, uploads = await read_sweep_submission(request)

    def create() -> schemas.Sweep:
        with state.sessions() as session:  # one thread hop for the whole create
            sweep = sweeps.create_sweep(state=state, session=session, key=key, spec=spec, uploads=uploads)
            return sweep_view(deps=state, session=session, sweep=sweep, base_url=base)

    return await run_in_threadpool(create)


add_create_routes(router, create_sweep, name="create_sweep", answer=schemas.Sweep, responses=CREATED,
                  body="SweepSpec", form_spec="SweepSpec", many_images=True,
                  image_help="The images, each a PNG, JPEG or WebP; they join the spec's `images`.", what="a sweep")


@router.get("/{sweep_id}", name="get_sweep", response_model=schemas.Sweep,
            responses=answers(200, schemas.Sweep, "The sweep.", 404))
def get_sweep(sweep_id: str, state: StateDep, session: SessionDep, key: CurrentKey, base: BaseUrl) -> schemas.Sweep:
    sweep = sweeps.get_sweep(session=session, key=key, sweep_id=sweep_id)
    return sweep_view(deps=state, session=session, sweep=sweep, base_url=base)


@router.get("/{sweep_id}/jobs", name="list_sweep_jobs", response_model=schemas.Page[schemas.Job],
            responses=answers(200, schemas.Page[schemas.Job], "The sweep's cells, newest first.", 404, 422))
async def list_sweep_jobs(sweep_id: str, state: StateDep, key: CurrentKey, base: BaseUrl,
                          status: JobStatus | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 200,
                          cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
                          ) -> schemas.Page[schemas.Job]:
    def owned() -> None:
        with state.sessions() as session:
            sweeps.get_sweep(session=session, key=key, sweep_id=sweep_id)

    await run_in_threadpool(owned)
    return await read_jobs_page(state, key, status=status, sweep_id=sweep_id, limit=limit, cursor=cursor,
                                base_url=base)


@router.post("/{sweep_id}/cancel", name="cancel_sweep", response_model=schemas.Sweep,
             responses=answers(200, schemas.Sweep, "The sweep; its queued cells canceled.", 404, 409))
def cancel_sweep(sweep_id: str, state: StateDep, session: SessionDep, key: CurrentKey,
                 base: BaseUrl) -> schemas.Sweep:
    sweep = sweeps.cancel_sweep(state=state, session=session, key=key, sweep_id=sweep_id)
    return sweep_view(deps=state, session=session, sweep=sweep, base_url=base)


def _grid(session: SessionDep, key: CurrentKey, sweep_id: str, image_id: str) -> SweepGrid:
    sweeps.get_sweep(session=session, key=key, sweep_id=sweep_id)
    grid = session.get(SweepGrid, (sweep_id, image_id))
    if grid is not None and grid.status == "expired":
        raise ApiError(410, EXPIRED, expired_message(f"The grid of image {image_id} in sweep {sweep_id}",
                                                     grid.updated_at, "Its cells' jobs can be rerun one by one."))
    if grid is None or grid.status != "done":
        raise ApiError(404, "not_found", "No finished grid for that image yet; it is made once all its cells end.")
    return grid


STORED: dict[int | str, dict[str, Any]] = {**FILE_ANSWERS, **failures(404, 410)}


@router.get("/{sweep_id}/grids/{image_id}/video", name="grid_video", response_class=Response, responses=STORED)
def grid_video(sweep_id: str, image_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    return serve_stored(state.store, _grid(session, key, sweep_id, image_id).video_key or "", "video/mp4")


@router.get("/{sweep_id}/grids/{image_id}/poster", name="grid_poster", response_class=Response, responses=STORED)
def grid_poster(sweep_id: str, image_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    return serve_stored(state.store, _grid(session, key, sweep_id, image_id).poster_key or "", "image/jpeg")
