"""What a chaos run reads back to judge itself: the jobs' rows (status, attempts, lease), the lines of every
worker's log that name a job (claims, successes, leases taken, hand-backs), and each job's result objects."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from models.status import TERMINAL
from models.tables import Job, utcnow
from ops.harness.processes import Proc

SUCCEEDED_RE = re.compile(r"job (job_\w+) succeeded")
CLAIMED_RE = re.compile(r"job (job_\w+) claimed by")
TAKEN_RE = re.compile(r"job (job_\w+) (?:was taken from this worker)")
HANDED_BACK_RE = re.compile(r"job (job_\w+) handed back")


@dataclass
class JobRow:
    id: str
    status: str
    error_code: str | None
    attempts: int
    worker: str | None
    lease_expired: bool


def job_rows(engine: Engine, ids: list[str]) -> dict[str, JobRow]:
    now = utcnow()
    with engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.status, Job.error_code, Job.attempts, Job.worker,
                                   Job.lease_expires_at).where(Job.id.in_(ids))).all()
    out = {}
    for r in rows:
        lease = r.lease_expires_at
        if lease is not None and lease.tzinfo is None:
            lease = lease.replace(tzinfo=dt.UTC)
        out[r.id] = JobRow(r.id, r.status, r.error_code, r.attempts, r.worker,
                           lease is None or lease < now)
    return out


def ended_count(engine: Engine, ids: list[str]) -> int:
    with engine.connect() as conn:
        n = conn.scalar(select(func.count()).select_from(Job).where(Job.id.in_(ids), Job.status.in_(TERMINAL)))
    return int(n or 0)


def log_stats(workers: list[Proc]) -> dict[str, Any]:
    """Per job id, how many times every worker log says it succeeded, was claimed, taken, handed back."""
    succeeded: Counter[str] = Counter()
    claimed: Counter[str] = Counter()
    taken: Counter[str] = Counter()
    handed_back: Counter[str] = Counter()
    for w in workers:
        for line in w.log_path.read_text(errors="replace").splitlines():
            for regex, counter in ((SUCCEEDED_RE, succeeded), (CLAIMED_RE, claimed), (TAKEN_RE, taken),
                                   (HANDED_BACK_RE, handed_back)):
                m = regex.search(line)
                if m:
                    counter[m.group(1)] += 1
    return {"succeeded": succeeded, "claimed": claimed, "taken": taken, "handed_back": handed_back}


def history(workers: list[Proc], job_id: str, limit: int = 40) -> list[str]:
    """Every worker log line naming the job, in time order, with the worker it came from."""
    lines = []
    for w in workers:
        for line in w.log_path.read_text(errors="replace").splitlines():
            if job_id in line:
                lines.append(f"{w.name} (pid {w.pid}): {line.strip()}")
    return sorted(lines, key=lambda s: s.split(": ", 1)[1])[:limit]


def result_objects(storage: Path, job_id: str) -> list[str]:
    d = storage / "jobs" / job_id
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []
