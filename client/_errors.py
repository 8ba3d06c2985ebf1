"""The SDK's one error type (client.sdk re-exports it)."""

from __future__ import annotations

from typing import Any


class SvdqError(Exception):
    """An error answer from the API (`status` 4xx/5xx), or one the SDK raises itself (`status` 0)."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or []


class JobFailed(SvdqError):
    """`run` waited for a job that ended failed or canceled: `job` is how it ended, `code` and `message` its
    error (`job_canceled` for a cancel)."""

    def __init__(self, job: Any) -> None:
        err = job.error
        code, message = (err.code, err.message) if err else (f"job_{job.status}", f"job {job.id} ended {job.status}")
        super().__init__(0, code, message)
        self.job = job
