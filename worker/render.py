"""One render job, from claim to a recorded result. Every failure ends the job with a code and a
sentence a person can act on."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from typing import Any

from PIL import Image

from models.db import session_scope
from models.images import fit_image
from models.states import JobStatus, claim_job, fail_job, finish_job, record_progress
from models.storage import ObjectMissing, StorageError, image_key, job_key
from models.tables import Job
from worker.context import WorkerContext
from worker.encode import EncodeError, encode, poster

log = logging.getLogger("svdq.worker")

UPLOAD_TRIES = 4


class JobFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class ProgressReporter:
    """Writes progress to the job row at most every `interval` seconds (and always at the end)."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.interval = ctx.settings.progress_interval_s
        self.last = 0.0

    def stage(self, stage: str, step: int, total: int, *, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        with session_scope(self.ctx.sessions) as s:
            record_progress(s, job_id=self.job_id, worker=self.ctx.name, step=step, total=total, stage=stage)

    def step(self, step: int, total: int) -> None:
        self.stage("denoising" if step < total else "decoding", step, total, force=step >= total)


def _upload(ctx: WorkerContext, key: str, data: bytes, content_type: str) -> None:
    delay = 0.5
    for attempt in range(1, UPLOAD_TRIES + 1):
        try:
            ctx.store.put(key, data, content_type)
            if ctx.store.get(key) != data:  # verify what was stored, byte for byte
                raise StorageError(f"stored object {key} does not match what was uploaded")
            return
        except StorageError as exc:
            if attempt == UPLOAD_TRIES:
                raise JobFailed("storage_unavailable",
                                f"Storing the result failed {UPLOAD_TRIES} times ({exc}); "
                                "check that the storage service is reachable, then rerun the job.") from exc
            log.warning("upload of %s failed (%s); retrying in %.1fs", key, exc, delay)
            time.sleep(delay)
            delay *= 2


def _render(ctx: WorkerContext, job: Job, progress: ProgressReporter) -> tuple[dict[str, Any], dict[str, Any]]:
    params = job.params
    try:
        raw = ctx.store.get(image_key(job.image_id))
    except ObjectMissing as exc:
        raise JobFailed("image_missing",
                        f"The job's image {job.image_id} is no longer stored; upload it again.") from exc
    except StorageError as exc:
        raise JobFailed("storage_unavailable", f"Reading the job's image failed ({exc}).") from exc
    image = fit_image(Image.open(io.BytesIO(raw), formats=["PNG"]).convert("RGB"),
                      params["width"], params["height"], params["resize"])

    t0 = time.perf_counter()
    progress.stage("denoising", 0, params["num_inference_steps"])
    try:
        frames = ctx.holder.render(image, params, progress.step)
    except JobFailed:
        raise
    except Exception as exc:
        if "out of memory" in str(exc).lower():
            raise JobFailed("out_of_memory",
                            f"The GPU ran out of memory rendering {params['num_frames']} frames at "
                            f"{params['width']}x{params['height']}; "
                            "lower the size, frames or decode_chunk_size.") from exc
        raise JobFailed("render_failed", f"The render failed: {exc.__class__.__name__}: {exc}") from exc
    t_render = time.perf_counter() - t0

    fmt = job.output.get("format", "mp4")
    progress.stage("encoding", params["num_inference_steps"], params["num_inference_steps"])
    try:
        video = encode(frames, fps=params["fps"], fmt=fmt)
        poster_jpg = poster(frames)
    except EncodeError as exc:
        raise JobFailed("encode_failed", str(exc)) from exc
    t_encode = time.perf_counter() - t0 - t_render

    progress.stage("uploading", params["num_inference_steps"], params["num_inference_steps"])
    video_key = job_key(job.id, f"video.{video.extension}")
    poster_key = job_key(job.id, "poster.jpg")
    _upload(ctx, video_key, video.data, video.content_type)
    _upload(ctx, poster_key, poster_jpg, "image/jpeg")
    t_upload = time.perf_counter() - t0 - t_render - t_encode

    t, h, w, _ = frames.shape
    result = {
        "video_key": video_key, "poster_key": poster_key, "content_type": video.content_type,
        "bytes": len(video.data), "sha256": hashlib.sha256(video.data).hexdigest(),
        "frames": int(t), "width": int(w), "height": int(h), "fps": params["fps"],
    }
    runtime = {
        **ctx.holder.record(), "worker": ctx.name, "seed": params["seed"],
        "timings": {"render_s": round(t_render, 4), "encode_s": round(t_encode, 4),
                    "upload_s": round(t_upload, 4)},
    }
    return result, runtime


def run_render(ctx: WorkerContext, job_id: str) -> str:
    """Claim the job and render it; the return value says what happened (for logs and Flower)."""
    with session_scope(ctx.sessions) as s:
        claimed = claim_job(s, job_id=job_id, worker=ctx.name, lease_s=ctx.spec.time_limit_s + 300)
        job = s.get(Job, job_id)
    if job is None:
        log.warning("job %s does not exist; message dropped", job_id)
        return "missing"
    if not claimed:
        log.info("job %s is %s; not rendering it", job_id, job.status)
        return f"skipped:{job.status}"
    log.info("job %s claimed by %s", job_id, ctx.name)
    progress = ProgressReporter(ctx, job_id)
    try:
        result, runtime = _render(ctx, job, progress)
    except JobFailed as exc:
        log.warning("job %s failed: %s %s", job_id, exc.code, exc.message)
        with session_scope(ctx.sessions) as s:
            fail_job(s, job_id=job_id, worker=ctx.name, code=exc.code, message=exc.message,
                     runtime={**ctx.holder.record(), "worker": ctx.name})
        return f"failed:{exc.code}"
    with session_scope(ctx.sessions) as s:
        finish_job(s, job_id=job_id, worker=ctx.name, result=result, runtime=runtime)
    ctx.jobs_done += 1
    log.info("job %s succeeded (%d bytes)", job_id, result["bytes"])
    return JobStatus.SUCCEEDED.value
