"""While a render runs: the lease kept alive from a side thread, and the checkpoint at every denoising step and
between stages, which stops the render on cancel, time limit, shutdown or a lost lease, and publishes progress."""

from __future__ import annotations

import contextvars
import logging
import threading
import time

from models.db import session_scope
from models.events import ProgressEvent
from models.schemas import Progress
from models.states import record_progress, renew_lease
from models.status import JobStatus
from models.tables import Job
from worker.context import WorkerContext
from worker.outcomes import JobCanceled, JobFailed, JobHandBack, JobLost

log = logging.getLogger("svdq.worker")


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
        self.ctx.signals.publish(self.job_id, ProgressEvent(progress=Progress(step=step, total=total,
                                                                              fraction=fraction, stage=stage)))
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
