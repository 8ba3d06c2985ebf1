"""Sweeps: cells from axes, the sweep's status from its cells, and when an image's grid can be composed."""

from __future__ import annotations

import itertools
import math
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.queue import GridEnqueue
from models.status import TERMINAL, JobStatus
from models.tables import Job, Sweep, SweepGrid, utcnow

STALE_COMPOSE = timedelta(minutes=10)
RESEND_AFTER = timedelta(seconds=60)  # a pending grid's message is sent again only after this


def expand(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes, the last axis varying fastest (row-major for the grid)."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[n] for n in names))]


def grid_shape(axes: dict[str, list[Any]]) -> tuple[int, int]:
    """One axis: a row. Two: rows x columns. More: the last axis across, all others down."""
    lengths = [len(v) for v in axes.values()] or [1]
    return math.prod(lengths[:-1]), lengths[-1]


def counts(session: Session, sweep_id: str) -> dict[str, int]:
    out = {s.value: 0 for s in JobStatus}
    for status, n in session.execute(select(Job.status, func.count()).where(Job.sweep_id == sweep_id)
                                     .group_by(Job.status)):
        out[status] = int(n)
    return out


def status(sweep: Sweep, c: dict[str, int]) -> str:
    active = c["queued"] + c["running"]
    if active:
        return "running" if (c["running"] or c["succeeded"] or c["failed"] or c["canceled"]) else "queued"
    if sweep.canceled_at is not None:
        return "canceled"
    return "failed" if c["failed"] else ("canceled" if c["canceled"] and not c["succeeded"] else "succeeded")


def image_done(session: Session, sweep_id: str, image_id: str) -> bool:
    open_cells = session.scalar(select(func.count()).select_from(Job).where(
        Job.sweep_id == sweep_id, Job.image_id == image_id, Job.status.notin_([s.value for s in TERMINAL])))
    return not open_cells


def claim_grid(session: Session, *, sweep_id: str, image_id: str) -> bool:
    """pending (or composing, stale after a crash) -> composing; only one composer wins."""
    now = utcnow()
    res = session.execute(update(SweepGrid).where(
        SweepGrid.sweep_id == sweep_id, SweepGrid.image_id == image_id,
        (SweepGrid.status == "pending") | ((SweepGrid.status == "composing")
                                           & (SweepGrid.updated_at < now - STALE_COMPOSE)),
    ).values(status="composing", updated_at=now))
    session.commit()
    return bool(res.rowcount)  # type: ignore[attr-defined]


def pending_grid_images(session: Session, sweep_id: str) -> list[str]:
    return list(session.scalars(select(SweepGrid.image_id).where(SweepGrid.sweep_id == sweep_id,
                                                                 SweepGrid.status == "pending")))


def request_grid(session: Session, enqueue_grid: GridEnqueue, sweep_id: str, image_id: str, model: str) -> None:
    """Send the grid's message (the grid task itself makes sure only one composer runs)."""
    session.execute(update(SweepGrid).where(SweepGrid.sweep_id == sweep_id, SweepGrid.image_id == image_id,
                                            SweepGrid.status == "pending").values(updated_at=utcnow()))
    session.commit()
    enqueue_grid(sweep_id, image_id, model)


def pending_grids(session: Session, enqueue_grid: GridEnqueue, limit: int = 100) -> int:
    """The maintenance pass: grids whose cells have all ended but that nobody composed (a lost message,
    a cell canceled by the API, a composer that died) are enqueued again."""
    now = utcnow()
    rows = session.execute(
        select(SweepGrid.sweep_id, SweepGrid.image_id, Sweep.model).join(Sweep, Sweep.id == SweepGrid.sweep_id)
        .where(((SweepGrid.status == "pending") & (SweepGrid.updated_at < now - RESEND_AFTER))
               | ((SweepGrid.status == "composing") & (SweepGrid.updated_at < now - STALE_COMPOSE)))
        .limit(limit)).all()
    sent = 0
    for sweep_id, image_id, model in rows:
        if image_done(session, sweep_id, image_id):
            request_grid(session, enqueue_grid, sweep_id, image_id, model)
            sent += 1
    return sent
