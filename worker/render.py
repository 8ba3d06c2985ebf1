"""One render job, from claim to a recorded result. Every failure ends the job with a code and a
sentence a person can act on."""

from __future__ import annotations

import contextvars
import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from PIL import Image
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models.db import session_scope
from models.images import fit_image
from models.postprocess import PostprocessSpec
from models.states import claim_job, fail_job, finish_job, record_progress, renew_lease, requeue_job
from models.status import JobStatus
from models.storage import ObjectMissing, StorageError, image_key, job_key
from models.sweeps import cell_ended
from models.tables import Job, utcnow
from models.webhooks import job_ended
from worker.context import WorkerContext
from worker.encode import EncodeError, encode, poster
from worker.frames import PostprocessCanceled, PostprocessError, PostprocessUnavailable
from worker.metrics import timed_steps
from worker.postprocess import run_postprocess

log = logging.getLogger("svdq.worker")

UPLOAD_TRIES = 4


class JobStop(Exception):
    """Ends a render early; `status` is where the job goes."""

    status = JobStatus.FAILED

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class JobFailed(JobStop):
    pass


class JobCanceled(JobStop):
    status = JobStatus.CANCELED


class JobTransient(JobStop):
    """A failure that may pass (storage, connections): the job goes back to the queue, up to max_attempts."""


class JobLost(JobStop):
    """The row is no longer this worker's (finished or taken elsewhere): stop and touch nothing."""


class JobHandBack(JobStop):
    """The worker is shutting down and the grace period ran out: the job goes back to the queue."""


class LeaseKeeper:
    """Renews the job's lease from a side thread while the render runs, so a render that outlives one
    lease is never mistaken for a dead worker; notices when the lease was taken from it."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.lost = False
        self._stop = threading.Event()
        # in the task's context, so its log lines carry the job_id
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,),
                                        name=f"lease-{job_id}", daemon=True)

    def _run(self) -> None:
        every = max(0.2, self.ctx.settings.lease_s / 4)
        while not self._stop.wait(every):
            try:
                with session_scope(self.ctx.sessions) as s:
                    if not renew_lease(s, job_id=self.job_id, worker=self.ctx.name, lease_s=self.ctx.settings.lease_s):
                        self.lost = True
                        return
            except Exception as exc:  # noqa: BLE001 - the database blinked; the lease has slack for it
                log.warning("lease renewal for %s failed: %s", self.job_id, exc)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class JobMonitor:
    """Runs at every denoising step and between stages: stops on cancel or time limit, publishes progress
    live (Redis pub/sub), and writes it to the job row at most every `interval` seconds."""

    def __init__(self, ctx: WorkerContext, job_id: str, lease: LeaseKeeper | None = None) -> None:
        self.ctx, self.job_id, self.lease = ctx, job_id, lease
        self.interval = ctx.settings.progress_interval_s
        self.started = time.monotonic()
        self.last_write = 0.0

    def checkpoint(self, stage: str, step: int, total: int, *, force: bool = True) -> None:
        where = f"{stage} at step {step} of {total}"
        if self.lease is not None and self.lease.lost:
            raise JobLost("lost", "the job's lease was taken by the reaper")
        asked = self.ctx.shutdown_requested_at
        if asked is not None and time.monotonic() - asked > self.ctx.settings.shutdown_grace_s:
            raise JobHandBack("worker_shutdown", f"The worker shut down during {where}; the job went back "
                              "to the queue to run elsewhere.")
        if self.ctx.signals.cancel_requested(self.job_id):
            raise JobCanceled("canceled", f"Canceled by request during {where}; nothing was stored.")
        limit = self.ctx.time_limit_s
        if time.monotonic() - self.started > limit:
            raise JobFailed("time_limit_exceeded",
                            f"The render passed its time limit of {limit:g} s during {where}; "
                            "ask for fewer steps or frames, or a smaller size.")
        fraction = round(step / total, 4) if total else 0.0
        self.ctx.signals.publish(self.job_id, {"type": "progress", "status": "running", "progress": {
            "step": step, "total": total, "fraction": fraction, "stage": stage}})
        now = time.monotonic()
        if not force and now - self.last_write < self.interval:
            return
        self.last_write = now
        with session_scope(self.ctx.sessions) as s:
            if record_progress(s, job_id=self.job_id, worker=self.ctx.name, step=step, total=total, stage=stage):
                return
            job = s.get(Job, self.job_id)
        if job is not None and job.status == JobStatus.RUNNING and job.cancel_requested_at is not None:
            raise JobCanceled("canceled", f"Canceled by request during {where}; nothing was stored.")
        raise JobLost("lost", "the job is no longer held by this worker")

    def step(self, step: int, total: int) -> None:
        self.checkpoint("denoising" if step < total else "decoding", step, total, force=step >= total)


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
                raise JobTransient("storage_unavailable",
                                f"Storing the result failed {UPLOAD_TRIES} times ({exc}); "
                                "check that the storage service is reachable, then rerun the job.") from exc
            log.warning("upload of %s failed (%s); retrying in %.1fs", key, exc, delay)
            time.sleep(delay)
            delay *= 2


def _render(ctx: WorkerContext, job: Job, progress: JobMonitor) -> tuple[dict[str, Any], dict[str, Any]]:
    params = job.params
    try:
        raw = ctx.store.get(image_key(job.image_id))
    except ObjectMissing as exc:
        raise JobFailed("image_missing",
                        f"The job's image {job.image_id} is no longer stored; upload it again.") from exc
    except StorageError as exc:
        raise JobTransient("storage_unavailable", f"Reading the job's image failed ({exc}).") from exc
    image = fit_image(Image.open(io.BytesIO(raw), formats=["PNG"]).convert("RGB"),
                      params["width"], params["height"], params["resize"])

    t0 = time.perf_counter()
    steps = params["num_inference_steps"]
    progress.checkpoint("denoising", 0, steps)
    try:
        frames = ctx.holder.render(image, params, timed_steps(ctx, progress.step))
    except JobStop:
        raise
    except Exception as exc:
        if "out of memory" in str(exc).lower():
            raise JobFailed("out_of_memory",
                            f"The GPU ran out of memory rendering {params['num_frames']} frames at "
                            f"{params['width']}x{params['height']}, also with decode chunk 1 and forward chunking; "
                            "lower the size, frames or decode_chunk_size.") from exc
        raise JobFailed("render_failed", f"The render failed: {exc.__class__.__name__}: {exc}") from exc
    post_records: list[dict[str, Any]] = []
    fps = params["fps"]
    if job.postprocess:
        def on_stage(name: str, index: int, total: int) -> None:
            progress.checkpoint(name, steps, steps)

        try:
            frames, fps, post_records = run_postprocess(
                frames, fps, PostprocessSpec.model_validate(job.postprocess), on_stage=on_stage,
                should_stop=lambda: ctx.signals.cancel_requested(job.id), learned=ctx.learned)
        except PostprocessCanceled as exc:
            raise JobCanceled("canceled", "Canceled by request during post-processing; nothing was stored.") from exc
        except PostprocessUnavailable as exc:
            raise JobFailed("postprocess_unavailable", f"Post-processing could not run here: {exc}.") from exc
        except PostprocessError as exc:
            raise JobFailed("postprocess_failed", f"Post-processing failed: {exc}") from exc
    t_render = time.perf_counter() - t0

    fmt = job.output.get("format", "mp4")
    progress.checkpoint("encoding", steps, steps)
    try:
        video = encode(frames, fps=fps, fmt=fmt)
        poster_jpg = poster(frames)
    except EncodeError as exc:
        raise JobFailed("encode_failed", str(exc)) from exc
    t_encode = time.perf_counter() - t0 - t_render

    progress.checkpoint("uploading", steps, steps)
    video_key = job_key(job.id, f"video.{video.extension}")
    poster_key = job_key(job.id, "poster.jpg")
    _upload(ctx, video_key, video.data, video.content_type)
    _upload(ctx, poster_key, poster_jpg, "image/jpeg")
    t_upload = time.perf_counter() - t0 - t_render - t_encode

    t, h, w, _ = frames.shape
    result = {
        "video_key": video_key, "poster_key": poster_key, "content_type": video.content_type,
        "bytes": len(video.data), "sha256": hashlib.sha256(video.data).hexdigest(),
        "frames": int(t), "width": int(w), "height": int(h), "fps": fps,
    }
    runtime = {
        **ctx.holder.record(), "worker": ctx.name, "seed": params["seed"], "postprocess": post_records,
        "memory": ctx.holder.last_memory_mode,
        # the memory plan and its reasons, attention, channels-last, compile, peak GPU memory (null on the CPU)
        "pipeline": ctx.holder.last_options,
        "timings": {"render_s": round(t_render, 4), "encode_s": round(t_encode, 4),
                    "upload_s": round(t_upload, 4)},
    }
    return result, runtime


def _end(ctx: WorkerContext, job: Job, stop: JobStop) -> str:
    runtime = {**ctx.holder.record(), "worker": ctx.name}
    if isinstance(stop, JobLost):
        log.warning("job %s was taken from this worker; result discarded", job.id)
        return "lost"
    with session_scope(ctx.sessions) as s:
        if isinstance(stop, JobHandBack) and ctx.enqueue is not None:
            if requeue_job(s, job_id=job.id, worker=ctx.name, code=stop.code, message=stop.message,
                           not_before=utcnow()):
                ctx.signals.queued(job.model, job.id, job.priority, job.created_at)
                ctx.enqueue(job.id, job.model, job.priority, 0.0)
                ctx.signals.publish(job.id, {"type": "status", "status": "queued"})
            log.warning("job %s handed back: %s", job.id, stop.message)
            return "handed_back"
        if isinstance(stop, JobTransient) and ctx.enqueue is not None and job.attempts < ctx.settings.max_attempts:
            delay = min(60.0, 2.0 ** job.attempts)
            message = f"{stop.message} Retrying (attempt {job.attempts + 1} of {ctx.settings.max_attempts})."
            if requeue_job(s, job_id=job.id, worker=ctx.name, code=stop.code, message=message,
                           not_before=utcnow() + timedelta(seconds=delay)):
                ctx.signals.queued(job.model, job.id, job.priority, job.created_at)
                ctx.enqueue(job.id, job.model, job.priority, delay)
                log.warning("job %s: %s; back in the queue in %.0fs", job.id, stop.code, delay)
                ctx.signals.publish(job.id, {"type": "status", "status": "queued"})
                return f"retrying:{stop.code}"
        if fail_job(s, job_id=job.id, worker=ctx.name, code=stop.code, message=stop.message, runtime=runtime,
                    status=stop.status):
            job_ended(s, job.id)
            cell_ended(s, job, ctx.enqueue_grid)
    log.warning("job %s %s: %s %s", job.id, stop.status, stop.code, stop.message)
    ctx.signals.publish(job.id, {"type": "status", "status": stop.status.value})
    return f"{stop.status.value}:{stop.code}"


def _retry_db(ctx: WorkerContext, write: Callable[[Session], bool]) -> bool:
    delay, deadline = 0.5, time.monotonic() + ctx.settings.db_retry_s
    while True:
        try:
            with session_scope(ctx.sessions) as s:
                return write(s)
        except OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1fs", exc.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


class ClaimDeferred(Exception):
    """The database stayed away for db_retry_s while claiming: the message must go back on the queue, not be
    acknowledged, or the job would stay queued with no message for it (and the reconciler would not resend it,
    since its queue index still lists it)."""


def _claim(ctx: WorkerContext, job_id: str) -> tuple[bool, Job | None]:
    found: list[tuple[bool, Job | None]] = []

    def claim(s: Session) -> bool:
        found.append((claim_job(s, job_id=job_id, worker=ctx.name, lease_s=ctx.settings.lease_s), s.get(Job, job_id)))
        return True

    try:
        _retry_db(ctx, claim)
    except OperationalError as exc:
        raise ClaimDeferred(f"database unavailable while claiming {job_id}: {exc.orig}") from exc
    return found[-1]


def run_render(ctx: WorkerContext, job_id: str) -> str:
    """Claim the job and render it; the return value says what happened (for logs and Flower)."""
    claimed, job = _claim(ctx, job_id)
    if job is None:
        log.warning("job %s does not exist; message dropped", job_id)
        return "missing"
    if not claimed:
        log.info("job %s is %s; not rendering it", job_id, job.status)
        return f"skipped:{job.status}"
    ctx.signals.dequeued(job.model, job_id)
    log.info("job %s claimed by %s (attempt %d)", job_id, ctx.name, job.attempts)
    try:
        with LeaseKeeper(ctx, job_id) as lease:
            result, runtime = _render(ctx, job, JobMonitor(ctx, job_id, lease))
            # the result is stored: keep it through a database outage rather than render again
            finished = _retry_db(ctx, lambda s: finish_job(s, job_id=job_id, worker=ctx.name, result=result,
                                                           runtime=runtime))
    except JobStop as stop:
        return _end(ctx, job, stop)
    if not finished:
        log.warning("job %s was taken from this worker before it finished; result discarded", job_id)
        return "lost"
    ctx.jobs_done += 1
    ctx.signals.publish(job_id, {"type": "status", "status": "succeeded"})
    with session_scope(ctx.sessions) as s:
        job_ended(s, job_id)
        cell_ended(s, job, ctx.enqueue_grid)
    log.info("job %s succeeded (%d bytes)", job_id, result["bytes"])
    return JobStatus.SUCCEEDED.value
