"""A model-based (Hypothesis stateful) test of the job state machine in models/states.py, against a real
PostgreSQL database migrated by the real migrations.

Workers claim, renew, report progress, finish, fail and hand back jobs; clients cancel them; time passes and
leases run out; the reaper takes expired jobs back, sometimes acting on a read it made a while ago; and two
callers race for the same row, truly at once (held back on the row's lock, then let go together). A plain
Python model says, for every call, whether its conditional update must win or lose; the test checks each
return value against that prediction, and after every step reads the rows again and checks them against the
model and against the invariants the conditional updates promise."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from models.db import create_db_engine, create_session_factory
from models.migrate import upgrade
from models.states import (
    claim_job,
    fail_job,
    finish_job,
    reclaim_expired,
    record_progress,
    renew_lease,
    request_cancel,
    requeue_job,
)
from models.status import TERMINAL, JobStatus
from models.tables import ApiKey, Image, Job, utcnow
from ops.harness.databases import postgres_database

WORKERS = ("w1", "w2", "w3")
JOBS_PER_EXAMPLE = 3
MAX_ATTEMPTS = 2  # the reaper's limit: a job whose worker died this often fails worker_lost
LEASE_S = 600.0  # far longer than the test runs: a lease runs out only when a rule says time passed
INITIAL_TOTAL = 3
NOT_BEFORE = datetime(2030, 1, 1, tzinfo=UTC)  # what a hand-back asks for; claim_job itself does not look at it
ROW_COLUMNS = ("status", "worker", "attempts", "lease_expires_at", "progress_step", "progress_total",
                  "progress_stage", "result", "runtime", "error_code", "error_message", "started_at",
                  "finished_at", "cancel_requested_at", "not_before")


# ---------------------------------------------------------------------------------------------------------------
# The model: what one job's row should say, and what each call must return


@dataclass
class JobModel:
    status: JobStatus = JobStatus.QUEUED
    worker: str | None = None
    attempts: int = 0
    lease_gen: int = 0  # bumps whenever the lease value must change: claim, renew, time running it out
    lease_expired: bool = False
    cancel_requested: bool = False
    cancel_gen: int = 0  # bumps whenever cancel_requested_at must be (re)written
    progress: tuple[int, int, str | None] = (0, INITIAL_TOTAL, None)
    error_code: str | None = None
    error_fragment: str | None = None  # the error message contains this
    result: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None
    not_before: datetime | None = None
    former_holders: set[str] = field(default_factory=set)  # every worker that ever claimed it
    handed_back: int = 0  # requeue_job wins; only the reaper's requeues are bounded by MAX_ATTEMPTS

    def held_by(self, worker: str | None) -> bool:
        return self.status == JobStatus.RUNNING and worker is not None and self.worker == worker

    def end(self, status: JobStatus, code: str | None, fragment: str | None) -> None:
        self.status, self.lease_expired = status, False
        if code is not None:
            self.error_code, self.error_fragment = code, fragment


class Op:
    """One call into models/states.py: `apply` is the model's prediction (and moves the model), `call` the
    real thing against the database."""

    def apply(self, m: JobModel) -> object:
        raise NotImplementedError

    def call(self, s: Session, job_id: str) -> object:
        raise NotImplementedError


@dataclass(frozen=True)
class Claim(Op):
    worker: str

    def apply(self, m: JobModel) -> object:
        if m.status != JobStatus.QUEUED:
            return False
        m.former_holders.add(self.worker)
        m.status, m.worker, m.attempts = JobStatus.RUNNING, self.worker, m.attempts + 1
        m.lease_gen, m.lease_expired = m.lease_gen + 1, False
        m.progress = (0, m.progress[1], "loading")
        m.error_code = m.error_fragment = None
        return True

    def call(self, s: Session, job_id: str) -> object:
        return claim_job(s, job_id=job_id, worker=self.worker, lease_s=LEASE_S)


@dataclass(frozen=True)
class Renew(Op):
    worker: str

    def apply(self, m: JobModel) -> object:
        if not m.held_by(self.worker):
            return False
        m.lease_gen, m.lease_expired = m.lease_gen + 1, False
        return True

    def call(self, s: Session, job_id: str) -> object:
        return renew_lease(s, job_id=job_id, worker=self.worker, lease_s=LEASE_S)


@dataclass(frozen=True)
class Progress(Op):
    worker: str
    step: int
    total: int
    stage: str

    def apply(self, m: JobModel) -> object:
        if not m.held_by(self.worker) or m.cancel_requested:
            return False
        m.progress = (self.step, self.total, self.stage)
        return True

    def call(self, s: Session, job_id: str) -> object:
        return record_progress(s, job_id=job_id, worker=self.worker, step=self.step, total=self.total,
                               stage=self.stage)


@dataclass(frozen=True)
class Finish(Op):
    worker: str

    def apply(self, m: JobModel) -> object:
        if not m.held_by(self.worker):
            return False
        m.end(JobStatus.SUCCEEDED, None, None)
        m.result, m.runtime = {"video": f"by-{self.worker}"}, {"worker": self.worker}
        m.progress = (m.progress[0], m.progress[1], "done")
        return True

    def call(self, s: Session, job_id: str) -> object:
        return finish_job(s, job_id=job_id, worker=self.worker, result={"video": f"by-{self.worker}"},
                          runtime={"worker": self.worker})


@dataclass(frozen=True)
class Fail(Op):
    worker: str | None  # None: the API failing a job no worker has taken (the queue did not accept it)
    status: JobStatus
    with_runtime: bool

    @property
    def code(self) -> str:
        return "canceled" if self.status == JobStatus.CANCELED else "render_failed"

    @property
    def message(self) -> str:
        return f"{self.code} reported by {self.worker}"

    def apply(self, m: JobModel) -> object:
        if self.worker is None and m.status != JobStatus.QUEUED:
            return False
        if self.worker is not None and not m.held_by(self.worker):
            return False
        m.end(self.status, self.code, self.message)
        if self.with_runtime:
            m.runtime = {"failed_by": self.worker}
        return True

    def call(self, s: Session, job_id: str) -> object:
        return fail_job(s, job_id=job_id, worker=self.worker, code=self.code, message=self.message,
                        runtime={"failed_by": self.worker} if self.with_runtime else None, status=self.status)


@dataclass(frozen=True)
class HandBack(Op):
    """requeue_job: the holder puts the job back after a transient failure."""

    worker: str

    def apply(self, m: JobModel) -> object:
        if not m.held_by(self.worker):
            return False
        m.status, m.worker, m.lease_expired, m.not_before = JobStatus.QUEUED, None, False, NOT_BEFORE
        m.error_code, m.error_fragment = "cuda_oom", f"transient on {self.worker}"
        m.progress, m.handed_back = (0, m.progress[1], "retrying"), m.handed_back + 1
        return True

    def call(self, s: Session, job_id: str) -> object:
        return requeue_job(s, job_id=job_id, worker=self.worker, not_before=NOT_BEFORE, code="cuda_oom",
                           message=f"transient on {self.worker}")


@dataclass(frozen=True)
class Cancel(Op):
    def apply(self, m: JobModel) -> object:
        if m.status == JobStatus.QUEUED:
            m.end(JobStatus.CANCELED, "canceled", "Canceled by request before it started.")
            m.cancel_requested, m.cancel_gen = True, m.cancel_gen + 1
            return "canceled"
        if m.status == JobStatus.RUNNING:
            if not m.cancel_requested:  # a second request keeps the first one's time
                m.cancel_requested, m.cancel_gen = True, m.cancel_gen + 1
            return "requested"
        return None

    def call(self, s: Session, job_id: str) -> object:
        return request_cancel(s, job_id=job_id)


@dataclass(frozen=True)
class Reclaim(Op):
    """The reaper acting on a row it read (`seen`, None when its read found no expired lease on this job)."""

    seen: Job | None = None
    seen_worker: str | None = None
    seen_lease_gen: int = -1
    seen_attempts: int = 0

    def apply(self, m: JobModel) -> object:
        if self.seen is None:
            return None
        if not (m.status == JobStatus.RUNNING and m.worker == self.seen_worker and m.lease_gen == self.seen_lease_gen):
            return None  # the job moved since the read: its worker renewed, finished, or another reaper won
        holder = self.seen_worker
        assert holder is not None
        if self.seen_attempts >= MAX_ATTEMPTS:
            m.end(JobStatus.FAILED, "worker_lost", f"(last: {holder})")
            return "failed"
        m.status, m.worker, m.lease_expired = JobStatus.QUEUED, None, False
        m.error_code, m.error_fragment = "worker_lost", f"Worker {holder} stopped answering"
        m.progress = (0, m.progress[1], "retrying")
        return "requeued"

    def call(self, s: Session, job_id: str) -> object:
        if self.seen is None:
            return None
        return reclaim_expired(s, job=self.seen, max_attempts=MAX_ATTEMPTS)


@dataclass(frozen=True)
class Claimed:
    """A claim some worker won: the job (its index in the example) and the worker."""

    job: int
    worker: str


workers = st.sampled_from(WORKERS)
jobs = st.integers(0, JOBS_PER_EXAMPLE - 1)
stages = st.sampled_from(["denoising", "decoding"])
fails = st.builds(Fail, st.none() | workers, st.sampled_from([JobStatus.FAILED, JobStatus.CANCELED]), st.booleans())
ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(Claim, workers), st.builds(Renew, workers),
    st.builds(Progress, workers, st.integers(1, 25), st.just(25), stages), st.builds(Finish, workers),
    fails, st.builds(HandBack, workers), st.just(Cancel()), st.just(Reclaim()),
)
racing_pairs = st.tuples(ops, ops)


# ---------------------------------------------------------------------------------------------------------------
# The database


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]
    pool: ThreadPoolExecutor
    owner_id: str
    image_id: str


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    with postgres_database() as url:
        upgrade(url)  # the real migrations, not create_all
        engine = create_db_engine(url)
        sessions = create_session_factory(engine)
        with sessions() as s:
            s.add(ApiKey(id="key_sm", name="state machine", prefix="svdq_sm_", key_hash="0" * 64, is_admin=False,
                         created_at=utcnow()))
            s.flush()
            s.add(Image(id="img_sm", owner_id="key_sm", sha256="0" * 64, width=8, height=8,
                        content_type="image/png", bytes=1, storage_key="images/img_sm.png", created_at=utcnow()))
            s.commit()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="racer") as pool:
            yield Database(engine, sessions, pool, "key_sm", "img_sm")
        engine.dispose()


def insert_queued_job(db: Database, job_id: str) -> None:
    with db.sessions() as s:
        s.add(Job(id=job_id, owner_id=db.owner_id, status=JobStatus.QUEUED, model="tiny", image_id=db.image_id,
                  params={}, output={"format": "mp4"}, priority=5, attempts=0, progress_step=0,
                  progress_total=INITIAL_TOTAL, created_at=utcnow()))
        s.commit()


def read_rows(db: Database, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    with db.sessions() as s:
        found = s.scalars(select(Job).where(Job.id.in_(job_ids))).all()
        return {j.id: {c: getattr(j, c) for c in ROW_COLUMNS} for j in found}


def reaper_read(db: Database, job_ids: list[str]) -> list[Job]:
    """What models.maintenance.reap reads: running jobs whose lease ran out (detached, as a paused reaper holds
    them)."""
    with db.sessions() as s:
        return list(s.scalars(select(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING,
                                                Job.lease_expires_at < utcnow())).all())


def _call_in_own_session(db: Database, op: Op, job_id: str) -> object:
    with db.sessions() as s:
        return op.call(s, job_id)


def wait_until_blocked_or_done(conn: Connection, futures: list[Future[object]]) -> int:
    """How many of the calls are blocked on a row lock, once each is either that or done (5 s at most)."""
    waiting_q = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
    deadline = time.monotonic() + 5
    waiting = 0
    while time.monotonic() < deadline:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))  # pg_stat_activity is frozen per transaction
        waiting = int(conn.scalar(waiting_q) or 0)
        if waiting + sum(f.done() for f in futures) >= len(futures):
            return waiting
        time.sleep(0.001)
    return -1


def race(db: Database, job_id: str, racers: tuple[Op, Op]) -> tuple[object, object]:
    """Run both calls at once: a third connection holds the row's lock until each call is either blocked on it
    or already done (its condition was false on the row as it stood), then lets go; PostgreSQL gives the row to
    one of them and re-checks the other's condition against the row that one left."""
    futures: list[Future[object]] = []
    with db.engine.connect() as blocker, blocker.begin():
        blocker.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": job_id})
        futures = [db.pool.submit(_call_in_own_session, db, op, job_id) for op in racers]
        waiting = wait_until_blocked_or_done(blocker, futures)
        event(f"race: {waiting} of 2 calls blocked on the row lock" if waiting >= 0 else "race: calls did not block")
    first, second = (f.result(timeout=30) for f in futures)
    return first, second


# ---------------------------------------------------------------------------------------------------------------
# The machine


class JobLifecycle(RuleBasedStateMachine):
    """Three queued jobs, three workers, a client, the reaper and the clock; every conditional update wins
    exactly when the model says it must, and the rows keep every invariant after every step."""

    db: Database  # set by the machine_database fixture
    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        self.job_ids = [f"job_sm_{uuid.uuid4().hex[:12]}" for _ in range(JOBS_PER_EXAMPLE)]
        self.model = {job_id: JobModel() for job_id in self.job_ids}
        self.stalled_reads: list[Reclaim] = []
        self._rows: dict[str, dict[str, Any]] | None = None
        # the first values seen for what the model only knows changed or not: keyed by the model's generation
        self.seen_lease: dict[str, tuple[int, datetime]] = {}
        self.seen_started: dict[str, tuple[int, datetime]] = {}
        self.seen_cancel: dict[str, tuple[int, datetime]] = {}
        self.seen_terminal: dict[str, dict[str, Any]] = {}
        self.seen_attempts: dict[str, int] = {}
        self.claims_won = dict.fromkeys(self.job_ids, 0)  # counted from what claim_job returned, not the model

    # -- helpers -------------------------------------------------------------------------------------------------

    def rows(self) -> dict[str, dict[str, Any]]:
        if self._rows is None:
            self._rows = read_rows(self.db, self.job_ids)
        return self._rows

    def perform(self, job_id: str, op: Op) -> object:
        m = self.model[job_id]
        worker = getattr(op, "worker", None)
        lost_it = worker is not None and worker in m.former_holders and not m.held_by(worker)
        predicted = op.apply(m)
        with self.db.sessions() as s:
            got = op.call(s, job_id)
        self._rows = None
        self.count_claims(job_id, (op,), (got,))
        assert got == predicted, f"{op} on {job_id}: returned {got!r}, the model says {predicted!r}"
        if lost_it and not isinstance(op, Claim):
            # Then a worker that lost the job (reaped, handed back, ended, taken over) can no longer touch it
            assert got is False
            event(f"a worker that no longer holds its job was refused: {type(op).__name__}")
        event(f"{type(op).__name__} -> {got!r}")
        return got

    def count_claims(self, job_id: str, ops: tuple[Op, ...], results: tuple[object, ...]) -> None:
        self.claims_won[job_id] += sum(1 for op, r in zip(ops, results, strict=True) if isinstance(op, Claim) and r)

    def reaper_reads(self) -> list[Reclaim]:
        seen = reaper_read(self.db, self.job_ids)
        expected = {j for j, m in self.model.items() if m.status == JobStatus.RUNNING and m.lease_expired}
        assert {job.id for job in seen} == expected, "the reaper's read disagrees with which leases ran out"
        assert all(job.attempts == self.model[job.id].attempts for job in seen)
        return [Reclaim(job, job.worker, self.model[job.id].lease_gen, job.attempts) for job in seen]

    # -- rules ---------------------------------------------------------------------------------------------------

    @initialize(target=claims, first_claims=st.lists(workers, min_size=1, max_size=JOBS_PER_EXAMPLE))
    def three_jobs_are_queued_and_some_claimed(self, first_claims: list[str]) -> MultipleResults[Claimed]:
        # Given three queued jobs, the first one or more of them claimed (so every example renders something)
        for job_id in self.job_ids:
            insert_queued_job(self.db, job_id)
        for job, worker in enumerate(first_claims):
            assert self.perform(self.job_ids[job], Claim(worker)) is True
        return multiple(*(Claimed(job, worker) for job, worker in enumerate(first_claims)))

    @rule(target=claims, job=jobs, worker=workers)
    def a_worker_claims_a_job(self, job: int, worker: str) -> Claimed | MultipleResults[Claimed]:
        won = self.perform(self.job_ids[job], Claim(worker))
        return Claimed(job, worker) if won else multiple()

    def holder(self, job: int, fallback: str) -> str:
        """The worker that holds the job now, per the model; `fallback` when none does (then the call must lose)."""
        return self.model[self.job_ids[job]].worker or fallback

    @rule(job=jobs, fallback=workers)
    def the_holder_of_a_job_renews_its_lease(self, job: int, fallback: str) -> None:
        self.perform(self.job_ids[job], Renew(self.holder(job, fallback)))

    @rule(job=jobs, fallback=workers, step=st.integers(1, 25), stage=stages)
    def the_holder_of_a_job_records_progress(self, job: int, fallback: str, step: int, stage: str) -> None:
        self.perform(self.job_ids[job], Progress(self.holder(job, fallback), step, 25, stage))

    @rule(job=jobs, fallback=workers, how=st.sampled_from(["succeeds", "fails", "stops for a cancel", "hands back"]),
          with_runtime=st.booleans())
    def the_holder_of_a_job_ends_its_attempt(self, job: int, fallback: str, how: str, with_runtime: bool) -> None:
        self.perform(self.job_ids[job], self.ending(self.holder(job, fallback), how, with_runtime))

    @staticmethod
    def ending(worker: str, how: str, with_runtime: bool) -> Op:
        return {"succeeds": Finish(worker), "fails": Fail(worker, JobStatus.FAILED, with_runtime),
                "stops for a cancel": Fail(worker, JobStatus.CANCELED, with_runtime),
                "hands back": HandBack(worker)}[how]  # hands back: requeue_job after a transient failure

    # a claim stays in the bundle after its worker loses the job (reaped, handed back, ended, taken over), so this
    # is also that worker coming back late: the model says it must lose
    @rule(claim=claims, does=st.sampled_from(["renews", "records progress", "succeeds", "fails",
                                              "stops for a cancel", "hands back"]), with_runtime=st.booleans())
    def a_worker_that_claimed_a_job_acts_on_it(self, claim: Claimed, does: str, with_runtime: bool) -> None:
        op = {"renews": Renew(claim.worker), "records progress": Progress(claim.worker, 9, 25, "denoising")}.get(
            does) or self.ending(claim.worker, does, with_runtime)
        self.perform(self.job_ids[claim.job], op)

    @rule(job=jobs)
    def the_api_fails_a_job_the_queue_refused(self, job: int) -> None:
        # fail_job with no worker: only a queued job, one no worker holds, can fail this way
        self.perform(self.job_ids[job], Fail(None, JobStatus.FAILED, with_runtime=False))

    @rule(job=jobs, op=ops)
    def anyone_tries_anything_on_any_job(self, job: int, op: Op) -> None:
        # a worker that never held the job, the API failing a queued job (Fail with no worker), a second reaper
        if isinstance(op, Reclaim):
            op = self._reaper_now(self.job_ids[job])
        self.perform(self.job_ids[job], op)

    @rule(job=jobs)
    def a_client_cancels_a_job(self, job: int) -> None:
        self.perform(self.job_ids[job], Cancel())

    @rule(claim=claims)
    def a_client_cancels_a_job_a_worker_claimed(self, claim: Claimed) -> None:
        # most often still running: the flag is set, and that worker's next progress report must be refused
        self.perform(self.job_ids[claim.job], Cancel())

    def lease_runs_out(self, job_id: str) -> None:
        # time passing, as a dead worker sees it: the lease of whoever holds the job now is in the past
        m = self.model[job_id]
        with self.db.sessions() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                            .values(lease_expires_at=utcnow() - timedelta(seconds=60)))
            s.commit()
        self._rows = None
        assert bool(res.rowcount) == (m.status == JobStatus.RUNNING)  # type: ignore[attr-defined]
        if m.status == JobStatus.RUNNING:
            m.lease_gen, m.lease_expired = m.lease_gen + 1, True

    @rule(claim=claims, reaper_comes_by=st.booleans())
    def the_worker_of_a_claim_dies_and_its_lease_runs_out(self, claim: Claimed, reaper_comes_by: bool) -> None:
        self.lease_runs_out(self.job_ids[claim.job])
        if reaper_comes_by:
            self.the_reaper_takes_back_every_expired_lease()

    @rule(claim=claims, meanwhile=st.sampled_from(["renews", "finishes", "hands back", "another reaper requeues it",
                                                   "another reaper requeues it and the worker claims it again",
                                                   "nothing happens"]))
    def a_reaper_is_overtaken_between_its_read_and_its_update(self, claim: Claimed, meanwhile: str) -> None:
        # Given a lease ran out (the worker only stalled) and a reaper read the job
        job_id = self.job_ids[claim.job]
        self.lease_runs_out(job_id)
        read = [r for r in self.reaper_reads() if r.seen is not None and r.seen.id == job_id]
        # When, before the reaper's update, the worker comes back, or another reaper gets there first
        if meanwhile in ("renews", "finishes", "hands back"):
            self.perform(job_id, {"renews": Renew(claim.worker), "finishes": Finish(claim.worker),
                                  "hands back": HandBack(claim.worker)}[meanwhile])
        elif meanwhile.startswith("another reaper"):
            self.the_reaper_takes_back_every_expired_lease()
            if meanwhile.endswith("claims it again"):
                self.perform(job_id, Claim(claim.worker))
        # Then the reaper's update wins only if nothing moved the job since its read
        for reclaim in read:
            self.perform(job_id, reclaim)

    @rule()
    def the_reaper_takes_back_every_expired_lease(self) -> None:
        for reclaim in self.reaper_reads():
            assert reclaim.seen is not None
            outcome = self.perform(reclaim.seen.id, reclaim)
            # Then each job it read comes back to the queue, or fails once it has used up its attempts
            assert outcome == ("failed" if reclaim.seen_attempts >= MAX_ATTEMPTS else "requeued")

    @rule()
    def the_reaper_reads_expired_leases_then_stalls(self) -> None:
        self.stalled_reads = (self.stalled_reads + self.reaper_reads())[-4:]

    @precondition(lambda self: bool(self.stalled_reads))
    @rule(pick=st.integers(0, 3))
    def the_stalled_reaper_acts_on_what_it_read(self, pick: int) -> None:
        # a read acted on twice must lose the second time: it stays in the list
        reclaim = self.stalled_reads[pick % len(self.stalled_reads)]
        assert reclaim.seen is not None
        self.perform(reclaim.seen.id, reclaim)

    @rule(target=claims, job=jobs, a=workers, b=workers)
    def two_workers_race_to_claim_a_job(self, job: int, a: str, b: str) -> Claimed | MultipleResults[Claimed]:
        queued = self.model[self.job_ids[job]].status == JobStatus.QUEUED
        results = self.race(job, (Claim(a), Claim(b)))
        # Then exactly one wins a queued job, and neither wins any other
        assert sum(bool(r) for r in results) == (1 if queued else 0)
        return multiple(*(Claimed(job, w) for w, won in zip((a, b), results, strict=True) if won))

    @rule(job=jobs, pair=racing_pairs)
    def two_callers_race_for_a_job(self, job: int, pair: tuple[Op, Op]) -> None:
        self.race(job, pair)

    def race(self, job: int, pair: tuple[Op, Op]) -> tuple[object, object]:
        job_id, m = self.job_ids[job], self.model[self.job_ids[job]]
        # a racing reaper acts on what it reads now; its read finds this job only when the lease ran out
        racers = tuple(self._reaper_now(job_id) if isinstance(op, Reclaim) else op for op in pair)
        a, b = racers[0], racers[1]
        got = race(self.db, job_id, (a, b))
        self._rows = None
        self.count_claims(job_id, (a, b), got)
        # Then the outcome is that of one order or the other, and the row is what that order leaves
        candidates = []
        for order in ((0, 1), (1, 0)):
            cm = copy.deepcopy(m)
            predicted: list[object] = [None, None]
            for i in order:
                predicted[i] = (a, b)[i].apply(cm)
            if tuple(predicted) == got:
                candidates.append(cm)
        assert candidates, f"race {a} | {b} on {job_id}: returned {got!r}, which neither order gives"
        row = self.rows()[job_id]
        for cm in candidates:
            if not self.mismatches(row, cm):
                self.model[job_id] = cm
                break
        else:
            raise AssertionError(f"race {a} | {b}: row {row} matches neither order: "
                                 f"{[self.mismatches(row, cm) for cm in candidates]}")
        event(f"race {type(a).__name__} | {type(b).__name__} -> {got!r}")
        return got

    def _reaper_now(self, job_id: str) -> Reclaim:
        found = [r for r in self.reaper_reads() if r.seen is not None and r.seen.id == job_id]
        return found[0] if found else Reclaim()

    # -- invariants ----------------------------------------------------------------------------------------------

    def mismatches(self, row: dict[str, Any], m: JobModel) -> list[str]:
        out = []
        expect = {"status": m.status, "worker": m.worker, "attempts": m.attempts, "error_code": m.error_code,
                  "result": m.result, "runtime": m.runtime, "not_before": m.not_before}
        out += [f"{k}={row[k]!r}, model {v!r}" for k, v in expect.items() if row[k] != v]
        progress = (row["progress_step"], row["progress_total"], row["progress_stage"])
        if progress != m.progress:
            out.append(f"progress={progress}, model {m.progress}")  # only the holder writes progress
        if m.error_fragment is not None and m.error_fragment not in (row["error_message"] or ""):
            out.append(f"error_message={row['error_message']!r} lacks {m.error_fragment!r}")
        if m.error_fragment is None and row["error_message"] is not None:
            out.append(f"error_message={row['error_message']!r}, model none")
        if (row["cancel_requested_at"] is not None) != m.cancel_requested:
            out.append(f"cancel_requested_at={row['cancel_requested_at']}, model {m.cancel_requested}")
        lease = row["lease_expires_at"]
        if m.status == JobStatus.RUNNING:
            if lease is None or (lease < utcnow()) != m.lease_expired:
                out.append(f"lease_expires_at={lease}, model expired={m.lease_expired}")
        elif lease is not None:
            out.append(f"lease_expires_at={lease} on a {m.status} job")
        return out

    @invariant()
    def each_row_is_what_the_model_says(self) -> None:
        rows = self.rows()
        assert set(rows) == set(self.job_ids)
        for job_id, row in rows.items():
            assert not self.mismatches(row, self.model[job_id]), (job_id, self.mismatches(row, self.model[job_id]))

    @invariant()
    def a_terminal_job_never_changes_again(self) -> None:
        for job_id, row in self.rows().items():
            if row["status"] in TERMINAL:
                first = self.seen_terminal.setdefault(job_id, row)
                assert row == first, f"{job_id} moved after it ended: {first} -> {row}"
            else:
                assert job_id not in self.seen_terminal, f"{job_id} left {self.seen_terminal[job_id]['status']}"

    @invariant()
    def a_running_job_has_exactly_one_holder_and_a_lease(self) -> None:
        for row in self.rows().values():
            if row["status"] == JobStatus.RUNNING:
                assert row["worker"] in WORKERS and row["lease_expires_at"] is not None
                assert row["started_at"] is not None and row["finished_at"] is None

    @invariant()
    def a_queued_job_has_no_holder_and_no_lease(self) -> None:
        for row in self.rows().values():
            if row["status"] == JobStatus.QUEUED:
                assert row["worker"] is None and row["lease_expires_at"] is None and row["finished_at"] is None

    @invariant()
    def finished_jobs_say_how_they_ended(self) -> None:
        for row in self.rows().values():
            if row["status"] in TERMINAL:
                assert row["finished_at"] is not None and row["lease_expires_at"] is None
            if row["status"] == JobStatus.SUCCEEDED:
                assert row["result"] is not None
            if row["status"] in (JobStatus.FAILED, JobStatus.CANCELED):
                assert row["error_code"] is not None and row["result"] is None

    @invariant()
    def attempts_never_decrease_and_grow_by_one_per_claim(self) -> None:
        for job_id, row in self.rows().items():
            assert row["attempts"] >= self.seen_attempts.get(job_id, 0)
            assert row["attempts"] == self.claims_won[job_id]
            self.seen_attempts[job_id] = row["attempts"]

    @invariant()
    def attempts_stay_within_max_attempts_when_only_the_reaper_requeued(self) -> None:
        for job_id, row in self.rows().items():
            if self.model[job_id].handed_back == 0:
                assert row["attempts"] <= MAX_ATTEMPTS

    @invariant()
    def leases_start_and_cancel_times_move_only_when_the_model_says(self) -> None:
        for job_id, row in self.rows().items():
            m = self.model[job_id]
            for seen, gen, value in ((self.seen_lease, m.lease_gen, row["lease_expires_at"]),
                                     (self.seen_started, m.attempts, row["started_at"]),
                                     (self.seen_cancel, m.cancel_gen, row["cancel_requested_at"])):
                if value is None:
                    continue
                if job_id in seen and seen[job_id][0] == gen:
                    assert value == seen[job_id][1], f"{job_id}: a value moved with nothing to move it"
                else:
                    assert job_id not in seen or value != seen[job_id][1], f"{job_id}: a value failed to move"
                    seen[job_id] = (gen, value)


@pytest.fixture(scope="module", autouse=True)
def machine_database(database: Database) -> Iterator[None]:
    JobLifecycle.db = database
    yield
    del JobLifecycle.db


# 40 fixed (derandomized) examples of up to 40 steps each: every conditional update wins exactly when the model
# says, and every invariant holds after every step. No shrinking: against a database it takes minutes, past the
# suite's per-test timeout; a failure prints the whole step sequence instead (add Phase.shrink for a minimal one)
TestJobStateMachine = JobLifecycle.TestCase
TestJobStateMachine.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, derandomize=True, database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_a_cancel_racing_a_hand_back_is_not_lost(database: Database) -> None:
    # Given a job w1 is rendering
    job_id = f"job_gap_{uuid.uuid4().hex[:12]}"
    insert_queued_job(database, job_id)
    with database.sessions() as s:
        if not claim_job(s, job_id=job_id, worker="w1", lease_s=LEASE_S):
            raise RuntimeError("setup: w1 could not claim the job")
    with database.engine.connect() as conn:
        outer = conn.begin()
        # When w1 hands it back (its update made, not yet committed) while a client cancels it
        handing_back = Session(bind=conn, join_transaction_mode="create_savepoint")
        if not requeue_job(handing_back, job_id=job_id, worker="w1", not_before=NOT_BEFORE, code="cuda_oom",
                           message="transient"):
            raise RuntimeError("setup: w1 could not hand the job back")
        cancel = database.pool.submit(_call_in_own_session, database, Cancel(), job_id)
        if wait_until_blocked_or_done(conn, [cancel]) != 1:  # blocked on its second update
            raise RuntimeError("the cancel did not block behind the hand-back")
        outer.commit()
        handing_back.close()
    outcome = cancel.result(timeout=30)
    row = read_rows(database, [job_id])[job_id]
    # Then the cancel lands in one order or the other: canceled at once, or flagged on the queued job
    assert (outcome, row["status"]) in {("canceled", JobStatus.CANCELED), ("requested", JobStatus.QUEUED)}, \
        f"request_cancel answered {outcome!r} for a job that is {row['status']}"
