"""Sweep service functions: validate the whole study first, then create every cell as an ordinary job."""

from __future__ import annotations

import math
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.limits_redis import check_capacity
from api.services import (
    JobPlan,
    ViewDeps,
    enqueue,
    fetch_url,
    get_image,
    invalid,
    iso,
    new_job,
    parse_body,
    plan_postprocess,
    store_image,
    webhook_errors,
)
from api.state import AppState
from models import sweeps as sw
from models.keys import limits_for
from models.params import FieldError, RenderParams, resolve_output, resolve_params
from models.queue import make_grid_enqueue
from models.registry import REGISTRY, get_spec
from models.states import request_cancel
from models.status import JobStatus
from models.tables import ApiKey, Image, Job, Sweep, SweepGrid, utcnow
from models.webhooks import job_ended

MAX_VALUES_PER_AXIS = 50


class SweepImage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    image_id: str | None = None
    image_url: str | None = None


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field("sweep", max_length=200)
    model: str = "tiny"
    images: list[SweepImage] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    output: dict[str, Any] = Field(default_factory=dict)
    postprocess: dict[str, Any] | None = None
    webhook_url: str | None = None
    priority: int = 5
    reuse: bool = True


def parse_sweep(raw: Any) -> SweepSpec:
    return parse_body(SweepSpec, raw, "sweep")


Cells = list[tuple[dict[str, Any], JobPlan]]


def plan_cells(spec: SweepSpec, *, n_images: int, max_cells: int,
               learned: frozenset[str] | None = None) -> tuple[dict[str, Any], Cells]:
    """The base params (seed fixed once for every cell) and one plan per combination of the axes. Every
    cell is checked before anything is stored; each bad value is named by its axis and index."""
    model = get_spec(spec.model)
    if model is None:
        raise invalid([FieldError(field="model", message=f"unknown model {spec.model!r}; "
                                  f"choose one of {', '.join(REGISTRY)}")])
    errors: list[FieldError] = []
    if n_images == 0:
        errors.append(FieldError(field="images", message="give at least one image (image_id, or multipart parts)"))
    known = set(RenderParams.model_fields)
    if not spec.axes:
        errors.append(FieldError(field="axes", message="name at least one render parameter to sweep"))
    for name, values in spec.axes.items():
        if name not in known:
            errors.append(FieldError(field=f"axes.{name}", message="not a render parameter; see GET /v1/models"))
        elif not values or len(values) > MAX_VALUES_PER_AXIS:
            errors.append(FieldError(field=f"axes.{name}", message=f"give 1 to {MAX_VALUES_PER_AXIS} values"))
        elif len({repr(v) for v in values}) != len(values):
            errors.append(FieldError(field=f"axes.{name}", message="values repeat; list each once"))
    total = n_images * math.prod(len(v) for v in spec.axes.values())
    if total > max_cells:
        errors.append(FieldError(field="axes", message=f"{total} cells is over the limit of {max_cells} per sweep; "
                                 "sweep fewer values or images"))
    if not 0 <= spec.priority <= 9:
        errors.append(FieldError(field="priority", message=f"must be between 0 and 9, got {spec.priority}"))
    base, base_errors = resolve_params(model, spec.params)
    output, out_errors = resolve_output(spec.output)
    errors += base_errors + out_errors
    if errors:
        raise invalid(errors, "The sweep is invalid; nothing was created. See details.")
    cells: Cells = []
    for combo in sw.expand(spec.axes):
        params, cell_errors = resolve_params(model, {**spec.params, "seed": base["seed"], **combo})
        for e in cell_errors:
            axis = e.field.removeprefix("params.")
            where = f"axes.{axis}[{spec.axes[axis].index(combo[axis])}]" if axis in combo else e.field
            errors.append(FieldError(field=where, message=e.message))
        post = None
        if not cell_errors:
            post, pp_errors = plan_postprocess(spec.postprocess, params, learned=learned)
            errors += pp_errors
        cells.append((combo, JobPlan(model=model.name, params=params, output=output, priority=spec.priority,
                                     postprocess=post, reuse=spec.reuse)))
    if errors:
        unique = list({(e.field, e.message): e for e in errors}.values())
        raise invalid(unique, "The sweep is invalid; nothing was created. See details.")
    return base, cells


def create_sweep(*, state: AppState, session: Session, key: ApiKey, spec: SweepSpec,
                 uploads: list[bytes]) -> Sweep:
    for i, item in enumerate(spec.images):
        if bool(item.image_url) == bool(item.image_id):
            raise ApiError(422, "invalid_params", "Give each image as image_id or image_url (one of them).",
                           [FieldError(field=f"images[{i}]", message="needs image_id or image_url").model_dump()])
    errors = webhook_errors(spec.webhook_url, allow_private=state.settings.allow_private_urls)
    if errors:
        raise invalid(errors, "The sweep is invalid; nothing was created. See details.")
    max_cells = limits_for(key, state.settings).max_sweep_cells
    base, cells = plan_cells(spec, n_images=len(spec.images) + len(uploads), max_cells=max_cells,
                             learned=state.settings.learned_stages())
    check_capacity(state, session, key=key, model=spec.model, new_jobs=(len(spec.images) + len(uploads)) * len(cells))
    images: list[Image] = []
    for item in spec.images:
        if item.image_url:
            images.append(store_image(state=state, session=session, key=key, data=fetch_url(state, item.image_url))[0])
        else:
            images.append(get_image(session=session, key=key, image_id=item.image_id or ""))
    images += [store_image(state=state, session=session, key=key, data=data)[0] for data in uploads]
    sweep = Sweep(id="swp_" + secrets.token_hex(12), owner_id=key.id, name=spec.name, model=spec.model,
                  webhook_url=spec.webhook_url,
                  total=len(images) * len(cells), created_at=utcnow(),
                  spec={"images": [img.id for img in images], "params": base, "axes": spec.axes,
                        "output": cells[0][1].output, "postprocess": spec.postprocess, "priority": spec.priority})
    session.add(sweep)
    session.flush()
    jobs = []
    for position, image in enumerate(images):
        session.merge(SweepGrid(sweep_id=sweep.id, image_id=image.id, position=position, status="pending",
                                updated_at=utcnow()))
        for index, (combo, plan) in enumerate(cells):
            job = new_job(state=state, session=session, key=key, plan=plan, image=image, sweep_id=sweep.id,
                          sweep_cell=combo, sweep_index=index)
            session.add(job)
            jobs.append(job)
    session.commit()  # the whole study exists, or none of it
    request_done_grids(state=state, session=session, sweep=sweep)  # images whose every cell was reused
    for job in jobs:
        if job.status == JobStatus.QUEUED:
            enqueue(state=state, session=session, job=job)
    return sweep


def get_sweep(*, session: Session, key: ApiKey, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or (sweep.owner_id != key.id and not key.is_admin):
        raise ApiError(404, "not_found", f"No sweep {sweep_id!r}.")
    return sweep


def sweep_view(*, state: ViewDeps, session: Session, sweep: Sweep, base_url: str) -> dict[str, Any]:
    counts = sw.counts(session, sweep.id)
    grids = []
    for g in session.scalars(select(SweepGrid).where(SweepGrid.sweep_id == sweep.id).order_by(SweepGrid.position)):
        entry: dict[str, Any] = {"image_id": g.image_id, "status": g.status, "video_url": None, "poster_url": None,
                                 "error": g.error}
        if g.status == "done" and g.video_key and g.poster_key:
            grid_url = f"{base_url}/v1/sweeps/{sweep.id}/grids/{g.image_id}"
            entry["video_url"] = state.store.presigned_url(g.video_key, "video/mp4") or grid_url + "/video"
            entry["poster_url"] = state.store.presigned_url(g.poster_key, "image/jpeg") or grid_url + "/poster"
        grids.append(entry)
    status = sw.status(sweep, counts)
    finished = None
    if status in ("succeeded", "failed", "canceled"):
        finished = session.scalar(select(Job.finished_at).where(Job.sweep_id == sweep.id)
                                  .order_by(Job.finished_at.desc()).limit(1))
    return {"id": sweep.id, "name": sweep.name, "model": sweep.model, "status": status, "total": sweep.total,
            "counts": counts, "axes": sweep.spec["axes"], "params": sweep.spec["params"],
            "images": sweep.spec["images"], "output": sweep.spec["output"], "grids": grids,
            "gallery_url": f"/ui/sweeps/{sweep.id}", "created_at": iso(sweep.created_at), "finished_at": iso(finished),
            "canceled_at": iso(sweep.canceled_at)}


def cancel_sweep(*, state: AppState, session: Session, key: ApiKey, sweep_id: str) -> Sweep:
    sweep = get_sweep(session=session, key=key, sweep_id=sweep_id)
    if sw.status(sweep, sw.counts(session, sweep.id)) in ("succeeded", "failed", "canceled"):
        raise ApiError(409, "sweep_finished", f"Sweep {sweep.id} already ended; there is nothing to cancel.")
    sweep.canceled_at = utcnow()
    session.commit()
    open_cells = session.scalars(select(Job).where(Job.sweep_id == sweep.id,
                                                   Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))).all()
    for job in open_cells:
        outcome = request_cancel(session, job_id=job.id)
        if outcome == "requested":
            state.signals.request_cancel(job.id)
        elif outcome == "canceled":
            state.signals.dequeued(job.model, job.id)
            state.signals.publish(job.id, {"type": "status", "status": "canceled"})
            job_ended(session, job.id)
    request_done_grids(state=state, session=session, sweep=sweep)
    session.refresh(sweep)
    return sweep


def request_done_grids(*, state: AppState, session: Session, sweep: Sweep) -> None:
    enqueue_grid = make_grid_enqueue(state.celery)
    pending = session.scalars(select(SweepGrid.image_id).where(SweepGrid.sweep_id == sweep.id,
                                                               SweepGrid.status == "pending")).all()
    for image_id in pending:
        if sw.image_done(session, sweep.id, image_id):
            sw.request_grid(session, enqueue_grid, sweep.id, image_id, sweep.model)
