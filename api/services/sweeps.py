"""Sweeps: validate the whole study first, then create every cell as an ordinary job; read and cancel."""

from __future__ import annotations

import math
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import ApiError, invalid_params
from api.quotas import check_capacity
from api.services.images import fetch_url, get_image, store_image
from api.services.jobs import new_job, queue_unavailable
from api.services.plans import JobPlan, cell_params, model_spec, plan_postprocess, webhook_errors
from api.state import AppState
from models import lifecycle
from models import sweeps as sw
from models.job_counts import count_finished
from models.keys import limits_for
from models.params import FieldError, RenderParams, resolve_output, resolve_params
from models.requests import MAX_VALUES_PER_AXIS, SweepSpec
from models.status import OPEN, TERMINAL, JobStatus
from models.tables import ApiKey, Image, Job, Sweep, SweepGrid, utcnow
from models.webhooks import event_filter

INVALID = "The sweep is invalid; nothing was created. See details."

Cells = list[tuple[dict[str, Any], JobPlan]]


def plan_cells(spec: SweepSpec, *, n_images: int, max_cells: int, default_model: str,
               learned: frozenset[str] | None = None) -> tuple[dict[str, Any], Cells]:
    """The base params (seed fixed once for every cell) and one plan per combination of the axes. Every
    cell is checked before anything is stored; each bad value is named by its axis and index."""
    model = model_spec(spec.model or default_model)
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
    base, base_errors = resolve_params(model, spec.params)
    output, out_errors = resolve_output(spec.output)
    errors += base_errors + out_errors
    if errors:
        raise invalid_params(errors, INVALID)
    cells: Cells = []
    for combo in sw.expand(spec.axes):
        params, cell_errors = resolve_params(model, cell_params(spec.params, base["seed"], combo))
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
        raise invalid_params(unique, INVALID)
    return base, cells


def create_sweep(*, state: AppState, session: Session, key: ApiKey, spec: SweepSpec,
                 uploads: list[bytes]) -> Sweep:
    for i, item in enumerate(spec.images):
        if bool(item.image_url) == bool(item.image_id):
            raise invalid_params([FieldError(field=f"images[{i}]", message="needs image_id or image_url")],
                                 "Give each image as image_id or image_url (one of them).")
    errors = webhook_errors(spec.webhook_url, allow_private=state.settings.allow_private_urls)
    if errors:
        raise invalid_params(errors, INVALID)
    max_cells = limits_for(key, state.settings).max_sweep_cells
    n_images = len(spec.images) + len(uploads)
    base, cells = plan_cells(spec, n_images=n_images, max_cells=max_cells, default_model=state.settings.default_model,
                             learned=state.settings.learned_stages())
    model = cells[0][1].model  # the registry's name
    check_capacity(state, session, key=key, model=model, new_jobs=n_images * len(cells))
    images: list[Image] = []
    for item in spec.images:
        if item.image_url:
            images.append(store_image(state=state, session=session, key=key, data=fetch_url(state, item.image_url))[0])
        else:
            images.append(get_image(state=state, session=session, key=key, image_id=item.image_id or ""))
    images += [store_image(state=state, session=session, key=key, data=data)[0] for data in uploads]
    postprocess = spec.postprocess.model_dump(exclude_none=True) if spec.postprocess is not None else None
    sweep = Sweep(id="swp_" + secrets.token_hex(12), owner_id=key.id, name=spec.name, model=model,
                  webhook_url=spec.webhook_url, webhook_events=event_filter(spec.webhook_events_filter),
                  total=len(images) * len(cells), created_at=utcnow(),
                  spec={"images": [img.id for img in images], "params": base, "axes": spec.axes,
                        "output": cells[0][1].output, "postprocess": postprocess, "priority": spec.priority})
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
    reused = [job for job in jobs if job.status in TERMINAL]
    for status in sorted({job.status for job in reused}):  # born ended: counted with the study's own commit
        count_finished(session, model=model, status=status, job_id=sweep.id,
                       n=sum(job.status == status for job in reused))
    session.commit()  # the whole study exists, or none of it
    lifecycle.grids_due(session, sweep, state.fx)  # images whose every cell was reused
    for job in jobs:
        if job.status == JobStatus.QUEUED and not lifecycle.submitted(session, job, state.fx):
            raise queue_unavailable()  # the cells not sent yet stay queued: the reconciler sends them later
    return sweep


def get_sweep(*, session: Session, key: ApiKey, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or (sweep.owner_id != key.id and not key.is_admin):
        raise ApiError(404, "not_found", f"No sweep {sweep_id!r}.")
    return sweep


def cancel_sweep(*, state: AppState, session: Session, key: ApiKey, sweep_id: str) -> Sweep:
    sweep = get_sweep(session=session, key=key, sweep_id=sweep_id)
    if sw.status(sweep, sw.counts(session, sweep.id)) in TERMINAL:
        raise ApiError(409, "sweep_finished", f"Sweep {sweep.id} already ended; there is nothing to cancel.")
    sweep.canceled_at = utcnow()
    session.commit()
    open_cells = session.scalars(select(Job).where(Job.sweep_id == sweep.id, Job.status.in_(OPEN))).all()
    for job in open_cells:
        lifecycle.cancel(session, job, state.fx)
    session.refresh(sweep)
    return sweep
