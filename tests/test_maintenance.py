"""The reaper and the reconciler on their own, against SQLite and a private Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy.orm import Session, sessionmaker

from models.db import create_db_engine, create_session_factory
from models.events import JobSignals
from models.keys import store_key
from models.lifecycle import Effects
from models.migrate import upgrade
from models.storage import LocalStore
from models.tables import Image, Job, utcnow
from worker.maintenance import Maintenance, reap, reconcile


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    engine = create_db_engine(url)
    sessions = create_session_factory(engine)
    with sessions() as s:
        key = store_key(s, "svdq_maint_key_123456", name="m")
        s.add(Image(id="img_m", owner_id=key.id, sha256="0" * 64, width=8, height=8, content_type="image/png",
                    bytes=1, storage_key="images/img_m.png", created_at=utcnow()))
        s.commit()
    yield sessions
    engine.dispose()


@pytest.fixture
def signals(redis_url: str) -> Iterator[JobSignals]:
    r = redis_lib.Redis.from_url(redis_url + "/9")
    r.flushdb()
    yield JobSignals(r)
    r.flushdb()


def add_job(sessions: sessionmaker[Session], job_id: str, *, status: str = "queued", age_s: float = 60,
            worker: str | None = None, lease_in_s: float | None = None, attempts: int = 0) -> None:
    now = utcnow()
    with sessions() as s:
        s.add(Job(id=job_id, owner_id=s.query(Image).one().owner_id, status=status, model="tiny", image_id="img_m",
                  params={}, output={"format": "mp4"}, priority=5, attempts=attempts, progress_step=0,
                  progress_total=1, created_at=now - timedelta(seconds=age_s), worker=worker,
                  lease_expires_at=None if lease_in_s is None else now + timedelta(seconds=lease_in_s)))
        s.commit()


def test_the_reconciler_sends_each_forgotten_job_once_however_often_it_runs(db, signals) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        add_job(db, f"job_q{i}")
    add_job(db, "job_young", age_s=0)  # just submitted: its own enqueue is still on the way
    add_job(db, "job_known")
    signals.queued("tiny", "job_known", 5, utcnow())
    sent: list[str] = []
    with db() as s:
        fx = Effects(signals=signals, enqueue=lambda j, *a: sent.append(j), enqueue_grid=lambda *a: None)
        first = reconcile(s, fx=fx, older_than_s=10)
        second = reconcile(s, fx=fx, older_than_s=10)
    assert (first, second) == (5, 0)
    assert sorted(sent) == [f"job_q{i}" for i in range(5)]


def test_the_reaper_requeues_dead_leases_leaves_live_ones_and_fails_poison_jobs(db, signals) -> None:  # type: ignore[no-untyped-def]
    add_job(db, "job_dead", status="running", worker="tiny-w1@a", lease_in_s=-5, attempts=1)
    add_job(db, "job_alive", status="running", worker="tiny-w2@a", lease_in_s=30, attempts=1)
    add_job(db, "job_poison", status="running", worker="tiny-w3@a", lease_in_s=-5, attempts=3)
    sent: list[str] = []
    with db() as s:
        fx = Effects(signals=signals, enqueue=lambda j, *a: sent.append(j), enqueue_grid=lambda *a: None)
        counts = reap(s, fx=fx, max_attempts=3)
    assert counts == {"requeued": 1, "failed": 1} and sent == ["job_dead"]
    with db() as s:
        dead, alive, poison = (s.get(Job, j) for j in ("job_dead", "job_alive", "job_poison"))
        assert dead is not None and dead.status == "queued" and dead.worker is None
        assert "tiny-w1@a" in (dead.error_message or "")
        assert alive is not None and alive.status == "running"
        assert poison is not None and poison.status == "failed" and poison.error_code == "worker_lost"
        assert "3 attempts" in (poison.error_message or "") and "tiny-w3@a" in (poison.error_message or "")


def test_one_maintenance_pass_runs_at_a_time_across_workers(db, signals, tmp_path) -> None:  # type: ignore[no-untyped-def]
    add_job(db, "job_q")
    fx = Effects(signals=signals, enqueue=lambda *a: None, enqueue_grid=lambda *a: None)
    m = Maintenance(sessions=db, fx=fx, max_attempts=3, interval_s=1, reconcile_after_s=1,
                    store=LocalStore(tmp_path / "results"), idempotency_retention_s=0, result_retention_s=0)
    signals.redis.set(Maintenance.LOCK, "someone-else", ex=30)
    assert m.run_once() == {}  # another worker holds the pass
    signals.redis.delete(Maintenance.LOCK)
    assert m.run_once()["reenqueued"] == 1
    assert signals.redis.get(Maintenance.LOCK) is None  # released when the pass ends
