"""/v1/jobs: submit (JSON, or multipart with the image), list, read, cancel, rerun, follow (SSE), the webhook
log, and the video and poster of a finished job."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.auth import CallerDep, CurrentKey
from api.bodies import read_job_submission
from api.deps import BaseUrl, SessionDep, StateDep
from api.errors import ApiError
from api.files import FILE_ANSWERS, serve_stored
from api.openapi import (
    PRINTABLE_HEADER,
    add_create_routes,
    answers,
    failures,
    links,
    sse_answer,
)
from api.reads import CURSOR_PATTERN, read_job, read_jobs_page
from api.services import jobs
from api.sse import already_seen_end, job_event_stream
from models import schemas
from models.retention import EXPIRED, expired_message
from models.status import JobStatus
from models.tables import WebhookDelivery
from models.views import delivery_view, job_view_now

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

LastEventId = Annotated[str | None, Header(
    alias="Last-Event-ID", max_length=200, description="The `id` of the last event a reconnecting client saw: "
    "the stream resumes after it (Server-Sent Events).")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=PRINTABLE_HEADER,
    description="Any unique string: a retried create with the same key and body returns the first result (200).")]
# from an answer carrying a job, to everything that reads or acts on it
JOB_LINKS = links({"job_id": "$response.body#/id"}, "get_job", "cancel_job", "rerun_job", "job_events",
                  "job_webhooks", "job_video", "job_poster", "job_preview")
CREATED = answers(202, schemas.Job, "The job, queued (or finished at once from a reused result).", 404, 409, 413,
                  415, 422, also={200: (schemas.Job, "The job an earlier request with this Idempotency-Key made.")},
                  links=JOB_LINKS)


async def submit_job(request: Request, response: Response, caller: CallerDep,
                     idempotency_key: IdempotencyKey = None) -> schemas.Job:
    spec, data = await read_job_submission(request)
    state, key, base = caller.state, caller.key, caller.base_url

    def submit() -> tuple[schemas.Job, bool]:
        with state.sessions() as session:  # one thread hop for the whole create
            made = jobs.submit_job(state=state, session=session, key=key, spec=spec, data=data,
                                   idem_key=idempotency_key)
            return job_view_now(deps=state, session=session, job=made.job, base_url=base,
                                position=made.position), made.created

    view, created = await run_in_threadpool(submit)
    response.status_code = 202 if created else 200
    return view


add_create_routes(router, submit_job, name="create_job", answer=schemas.Job, responses=CREATED, body="JobCreate",
                  form_spec="JobSpec", many_images=False, image_help="The image: PNG, JPEG or WebP.",
                  what="a render job")


@router.get("", name="list_jobs", response_model=schemas.Page[schemas.Job],
            responses=answers(200, schemas.Page[schemas.Job], "Newest first.", 422))
async def list_jobs(caller: CallerDep, status: JobStatus | None = None,
                    sweep_id: Annotated[str | None, Query(max_length=64)] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None) -> schemas.Page[schemas.Job]:
    return await read_jobs_page(caller.state, caller.key, status=status, sweep_id=sweep_id, limit=limit,
                                cursor=cursor, base_url=caller.base_url)


@router.get("/{job_id}", name="get_job", response_model=schemas.Job,
            responses=answers(200, schemas.Job, "The job.", 404))
async def get_job(job_id: str, caller: CallerDep) -> schemas.Job:
    return await read_job(caller.state, caller.key, job_id, caller.base_url)


@router.post("/{job_id}/cancel", name="cancel_job", response_model=schemas.Job, responses=answers(
    200, schemas.Job, "It was queued: canceled now.", 404, 409,
    also={202: (schemas.Job, "It is running: it stops at its next step.")}))
def cancel_job(job_id: str, response: Response, state: StateDep, session: SessionDep, key: CurrentKey,
               base: BaseUrl) -> schemas.Job:
    job, outcome = jobs.cancel_job(state=state, session=session, key=key, job_id=job_id)
    # canceled now (it was queued) -> 200; a running job stops at its next step -> 202
    response.status_code = 200 if outcome == "canceled" else 202
    return job_view_now(deps=state, session=session, job=job, base_url=base)


@router.post("/{job_id}/rerun", name="rerun_job", status_code=202, response_model=schemas.Job,
             responses=answers(202, schemas.Job, "The new job, queued.", 404, 409, links=JOB_LINKS))
def rerun_job(job_id: str, state: StateDep, session: SessionDep, key: CurrentKey, base: BaseUrl) -> schemas.Job:
    made = jobs.rerun_job(state=state, session=session, key=key, job=jobs.get_job(session=session, key=key,
                                                                                  job_id=job_id))
    return job_view_now(deps=state, session=session, job=made.job, base_url=base, position=made.position)


@router.get("/{job_id}/events", name="job_events", response_class=StreamingResponse, responses={
    200: sse_answer("Job", "One `data:` job object per change, ending after a terminal status; each event's `id` "
                    "names the job state it carries."),
    204: {"description": "Sent Last-Event-ID names the end of this (ended) job's stream: nothing more will come."},
    **failures(404)})
async def job_events(job_id: str, request: Request, caller: CallerDep,
                     last_event_id: LastEventId = None, preview: Annotated[bool, Query(
                         description="Also `event: preview` events while it denoises: {step, total, width, height, "
                         "content_type, image (base64 JPEG)}, at most 2 a second, unless the job has preview: "
                         "false. They carry no id; a client that does not ask gets none.")] = False) -> Response:
    async def load_view() -> schemas.Job:
        return await read_job(caller.state, caller.key, job_id, caller.base_url)

    if already_seen_end(await load_view(), last_event_id):  # (and a 404 before any stream starts)
        return Response(status_code=204)
    return StreamingResponse(job_event_stream(caller.state.aredis, job_id, load_view, request.is_disconnected,
                                              last_event_id, max_s=caller.state.settings.sse_max_s,
                                              previews=preview),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/webhooks", name="job_webhooks", response_model=schemas.DeliveryLog,
            responses=answers(200, schemas.DeliveryLog, "Each webhook event: its stable id, attempts, status and "
                              "last error.", 404))
def job_webhooks(job_id: str, session: SessionDep, key: CurrentKey) -> schemas.DeliveryLog:
    """The job's webhook delivery log."""
    jobs.get_job(session=session, key=key, job_id=job_id)
    rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.resource_id == job_id)
                           .order_by(WebhookDelivery.created_at))
    return schemas.DeliveryLog(items=[delivery_view(d) for d in rows])


@router.get("/{job_id}/preview", name="job_preview", response_class=Response, responses={
    200: {"description": "The job's latest live preview: a few frames side by side, from its latents at the step "
                         "named by the X-Preview-Step and X-Preview-Total headers (kept an hour after the job).",
          "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
    **failures(404)})
def job_preview(job_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    jobs.get_job(session=session, key=key, job_id=job_id)  # the caller's job, or 404
    event = state.signals.latest_preview(job_id)
    if event is None:
        raise ApiError(404, "no_preview", f"Job {job_id} has no preview: it has not started denoising, it asked for "
                       "preview: false, or its last preview is older than an hour.")
    return Response(base64.b64decode(event.image), media_type=event.content_type,
                    headers={"X-Preview-Step": str(event.step), "X-Preview-Total": str(event.total),
                             "Cache-Control": "no-store"})


def _finished(session: SessionDep, key: CurrentKey, job_id: str) -> dict[str, Any]:
    job = jobs.get_job(session=session, key=key, job_id=job_id)
    if job.result_expired_at is not None:
        raise ApiError(410, EXPIRED, expired_message(f"The result of job {job_id}", job.result_expired_at,
                                                     f"POST /v1/jobs/{job_id}/rerun renders it again."))
    if job.status != JobStatus.SUCCEEDED or not job.result:
        raise ApiError(409, "job_not_finished", f"Job {job_id} is {job.status}; its video exists once it "
                       "has succeeded.")
    return job.result


STORED: dict[int | str, dict[str, Any]] = {**FILE_ANSWERS, **failures(404, 409, 410)}


@router.get("/{job_id}/video", name="job_video", response_class=Response, responses=STORED)
def job_video(job_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    r = _finished(session, key, job_id)
    return serve_stored(state.store, r["video_key"], r["content_type"])


@router.get("/{job_id}/poster", name="job_poster", response_class=Response, responses=STORED)
def job_poster(job_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    r = _finished(session, key, job_id)
    return serve_stored(state.store, r["poster_key"], "image/jpeg")
