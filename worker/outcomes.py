"""How a render ends, typed: the exceptions that stop a render early (each says where the job goes), and the
outcome `run_render` returns to the task (its label is what Celery and Flower show) and to the worker's metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.status import JobStatus

OutcomeKind = Literal["succeeded", "failed", "canceled", "retrying", "handed_back", "lost", "skipped", "missing"]


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


@dataclass(frozen=True)
class RenderOutcome:
    """What became of one render message. `code` is the error code of a failed, canceled or retried render;
    `status` the job's status when the message was skipped (the job was not queued)."""

    kind: OutcomeKind
    code: str | None = None
    status: str | None = None

    @property
    def label(self) -> str:
        """`succeeded`, `failed:image_missing`, `retrying:storage_unavailable`, `skipped:canceled`, `lost`, ..."""
        detail = self.code if self.kind in ("failed", "canceled", "retrying") else self.status
        return f"{self.kind}:{detail}" if detail else self.kind

    @property
    def rendered(self) -> bool:
        """This worker claimed the job and rendered it to some end (metrics count these)."""
        return self.kind not in ("missing", "skipped")

    @property
    def failure(self) -> bool:
        """A failure worth counting by its code: a failed render, or one that failed for now and was requeued."""
        return self.kind in ("failed", "retrying")

    @property
    def final(self) -> bool:
        """The job reached a terminal status with this render."""
        return self.kind in ("succeeded", "failed", "canceled")


SUCCEEDED = RenderOutcome("succeeded")
LOST = RenderOutcome("lost")
HANDED_BACK = RenderOutcome("handed_back")
MISSING = RenderOutcome("missing")
