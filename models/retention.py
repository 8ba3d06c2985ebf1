"""How long idempotency keys and stored results are kept: the rules the API and the maintenance pass share.

`SVDQ_IDEMPOTENCY_RETENTION_S` (default a day): an Idempotency-Key answers with its first job this long after
that first request; later the same key makes a new job. `SVDQ_RESULT_RETENTION_S` (default a week): a
succeeded job's video and poster are deleted this long after it ended, but never while a job that reused them
ended more recently, nor while the job's sweep has a cell that is open or ended more recently or a grid still
to compose; a sweep's grids go with the same rule. 0 keeps either forever. The worker's maintenance pass
deletes what expired (worker/retention.py), a bounded batch each pass; a job whose result went says so
(`result_expired_at`, and `410 result_expired` from its video and poster)."""

from __future__ import annotations

from datetime import datetime, timedelta

from models.tables import utcnow

EXPIRED = "result_expired"
# reuse at submit stops this much before a result may be deleted, so a pass deleting it never races a new job
# that reuses it (clocks of API and worker hosts may differ by about this much)
REUSE_MARGIN_S = 600.0


def cutoff(retention_s: float, now: datetime | None = None) -> datetime | None:
    """What ended (or was created) before this has expired; None: kept forever."""
    return None if retention_s <= 0 else (now or utcnow()) - timedelta(seconds=retention_s)


def reusable_since(retention_s: float, now: datetime | None = None) -> datetime | None:
    """A result reused at submit must have ended after this (None: any), well inside its retention."""
    if retention_s <= 0:
        return None
    return (now or utcnow()) - timedelta(seconds=retention_s - min(REUSE_MARGIN_S, retention_s / 4))


def expired_message(what: str, expired_at: datetime, again: str) -> str:
    """The sentence a 410 result_expired carries: what went, when, why, and `again` (how to get it back)."""
    return (f"{what} was deleted on {expired_at:%Y-%m-%d %H:%M} UTC, when its retention ran out (results are kept "
            f"SVDQ_RESULT_RETENTION_S after their job ends). {again}")
