"""A job's status names and which of them are final. Pure data: the state machine (models/states.py), the typed
answers (models/schemas.py, which the SDK reads) and the harness share this one definition."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# a StrEnum member hashes and compares as its string, so `"failed" in TERMINAL` holds
TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})
OPEN: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
