"""From a claimed job's row to its stored video: read the image, render, post-process, encode, upload (verified
byte for byte), and the result and reproducibility record the job row keeps. Every failure raises a JobStop
that says where the job goes and why."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from models.images import fit_image
from models.postprocess import PostprocessSpec
from models.storage import ObjectMissing, StorageError, image_key, job_key
from models.tables import Job
from worker.context import WorkerContext
from worker.encode import EncodeError, encode, poster
from worker.frames import PostprocessCanceled, PostprocessError, PostprocessUnavailable
from worker.metrics import timed_steps
from worker.monitor import JobMonitor
from worker.outcomes import JobCanceled, JobFailed, JobStop, JobTransient
from worker.postprocess import run_postprocess
from worker.preview import previewer_for
from worker.video_metrics import measure

log = logging.getLogger("svdq.worker")

UPLOAD_TRIES = 4


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


class Measuring:
    """The decoded frames' metrics against the image they were rendered from (worker/video_metrics.py), worked out
    on a thread of its own while the job post-processes, encodes and uploads: NumPy releases the GIL in its array
    work and ffmpeg runs in its own process, so on a machine with a core to spare it adds little to the job's
    time. Measuring never fails a render: a failure is logged and the result has no metrics."""

    def __init__(self, job_id: str, frames: np.ndarray, image: Image.Image) -> None:
        self.job_id = job_id
        self.metrics: dict[str, Any] | None = None
        self.seconds = 0.0
        source = np.asarray(image.convert("RGB"))
        self._thread = threading.Thread(target=self._run, args=(frames, source), name=f"measure-{job_id}",
                                        daemon=True)
        self._thread.start()

    def _run(self, frames: np.ndarray, source: np.ndarray) -> None:
        start = time.perf_counter()
        try:
            self.metrics = measure(frames, source).as_result()
        except Exception as exc:  # noqa: BLE001 - the video is good without its measurements
            log.warning("job %s: measuring its video failed (%s: %s); its result has no metrics", self.job_id,
                        exc.__class__.__name__, exc, extra={"job_id": self.job_id})
        self.seconds = time.perf_counter() - start

    def result(self) -> tuple[dict[str, Any] | None, dict[str, float]]:
        """The metrics (None if measuring failed) once measuring has finished, and its timings: the seconds it took
        and the seconds the job waited for it here."""
        start = time.perf_counter()
        self._thread.join()
        return self.metrics, {"measure_s": round(self.seconds, 4),
                              "measure_wait_s": round(time.perf_counter() - start, 4)}


def produce(ctx: WorkerContext, job: Job, progress: JobMonitor) -> tuple[dict[str, Any], dict[str, Any]]:
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
        frames = ctx.holder.render(image, params, timed_steps(ctx.metrics, progress.step),
                                   on_latents=previewer_for(ctx, job))
    except JobStop:
        raise
    except Exception as exc:
        if "out of memory" in str(exc).lower():
            raise JobFailed("out_of_memory",
                            f"The GPU ran out of memory rendering {params['num_frames']} frames at "
                            f"{params['width']}x{params['height']}, also with decode chunk 1 and forward chunking; "
                            "lower the size, frames or decode_chunk_size.") from exc
        raise JobFailed("render_failed", f"The render failed: {exc.__class__.__name__}: {exc}") from exc
    # what the metrics describe: the model's own frames, before any post-processing
    measuring = Measuring(job.id, frames, image)
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
    metrics, measure_timings = measuring.result()

    t, h, w, _ = frames.shape
    result = {
        "video_key": video_key, "poster_key": poster_key, "content_type": video.content_type,
        "bytes": len(video.data), "sha256": hashlib.sha256(video.data).hexdigest(),
        "frames": int(t), "width": int(w), "height": int(h), "fps": fps, "metrics": metrics,
    }
    runtime = {
        **ctx.holder.record(), "worker": ctx.name, "seed": params["seed"], "postprocess": post_records,
        "memory": ctx.holder.last_memory_mode,
        # the memory plan and its reasons, attention, channels-last, compile, peak GPU memory (null on the CPU)
        "pipeline": ctx.holder.last_options,
        "timings": {"render_s": round(t_render, 4), "encode_s": round(t_encode, 4),
                    "upload_s": round(t_upload, 4), **measure_timings},
    }
    return result, runtime
