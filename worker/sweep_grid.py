"""The grid task: compose one image's comparison video once all its cells have ended."""

from __future__ import annotations

import io
import logging
import zipfile

import numpy as np
from PIL import Image
from sqlalchemy import select, update

from models.db import session_scope
from models.events import GridEvent
from models.storage import StorageError
from models.sweeps import claim_grid, grid_shape
from models.tables import Job, Sweep, SweepGrid, utcnow
from worker.context import WorkerContext
from worker.encode import encode
from worker.grid import Tile, compose, decode_video, label_for, poster_jpeg

log = logging.getLogger("svdq.worker")


def grid_keys(sweep_id: str, image_id: str) -> tuple[str, str]:
    return f"sweeps/{sweep_id}/grid_{image_id}.mp4", f"sweeps/{sweep_id}/grid_{image_id}.jpg"


def cell_frames(ctx: WorkerContext, job: Job) -> np.ndarray:
    assert job.result is not None
    data = ctx.store.get(job.result["video_key"])
    fmt = job.output.get("format", "mp4")
    if fmt == "frames":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return np.stack([np.asarray(Image.open(io.BytesIO(zf.read(n))).convert("RGB"))
                             for n in sorted(zf.namelist())])
    return decode_video(data, {"mp4": "mp4", "webm": "webm", "gif": "gif"}[fmt])


def run_grid(ctx: WorkerContext, sweep_id: str, image_id: str) -> str:
    with session_scope(ctx.sessions) as s:
        if not claim_grid(s, sweep_id=sweep_id, image_id=image_id):
            return "skipped"
        sweep = s.get(Sweep, sweep_id)
        cells = list(s.scalars(select(Job).where(Job.sweep_id == sweep_id, Job.image_id == image_id)
                               .order_by(Job.sweep_index)))
    assert sweep is not None
    video_key, poster_key = grid_keys(sweep_id, image_id)
    try:
        tiles = []
        for job in cells:
            label = label_for(job.sweep_cell or {})
            if job.status == "succeeded" and job.result:
                tiles.append(Tile(label=label, frames=cell_frames(ctx, job), fps=job.result["fps"]))
            else:
                tiles.append(Tile(label=label, frames=None, note=f"{job.status}: {job.error_code or ''}".strip(": ")))
        rows, cols = grid_shape(sweep.spec["axes"])
        frames, fps = compose(tiles, rows, cols)
        video = encode(frames, fps=fps, fmt="mp4")
        ctx.store.put(video_key, video.data, video.content_type)
        ctx.store.put(poster_key, poster_jpeg(frames), "image/jpeg")
        values = {"status": "done", "video_key": video_key, "poster_key": poster_key, "error": None}
    except (StorageError, OSError, ValueError, RuntimeError) as exc:
        log.warning("grid %s/%s failed: %s", sweep_id, image_id, exc)
        values = {"status": "failed", "error": f"Composing the grid failed: {exc}"}
    with session_scope(ctx.sessions) as s:
        s.execute(update(SweepGrid).where(SweepGrid.sweep_id == sweep_id, SweepGrid.image_id == image_id)
                  .values(updated_at=utcnow(), **values))
    ctx.signals.publish_grid(sweep_id, GridEvent(image_id=image_id, status=str(values["status"])))
    log.info("grid %s/%s %s", sweep_id, image_id, values["status"])
    return str(values["status"])
