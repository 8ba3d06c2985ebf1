"""The job state machine moves only through conditional updates guarded by its transition table: racing callers
cannot both win, and a move the table does not allow cannot be made (tests/test_job_state_machine.py drives it
with random calls)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from models.db import create_db_engine, create_session_factory
from models.keys import store_key
from models.migrate import upgrade
from models.states import TRANSITIONS, Move, can_move, claim_job, fail_job, finish_job, record_progress
from models.status import TERMINAL, JobStatus
from models.tables import Image, Job, utcnow


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path}/s.db"
    upgrade(url)  # the real migrations, not create_all
    engine = create_db_engine(url)
    with create_session_factory(engine)() as s:
        key = store_key(s, "svdq_unit_key_abcdefgh", name="t")
        s.add(Image(id="img_1", owner_id=key.id, sha256="0" * 64, width=8, height=8, content_type="image/png",
                    bytes=1, storage_key="images/img_1.png", created_at=utcnow()))
        s.add(Job(id="job_1", owner_id=key.id, status="queued", model="tiny", image_id="img_1", params={},
                  output={"format": "mp4"}, priority=5, attempts=0, progress_step=0, progress_total=3,
                  created_at=utcnow()))
        s.commit()
        yield s
    engine.dispose()


def status(s: Session) -> str:
    s.expire_all()
    job = s.get(Job, "job_1")
    assert job is not None
    return job.status


def test_only_one_worker_can_claim_a_job(session: Session) -> None:
    assert claim_job(session, job_id="job_1", worker="a", lease_s=60)
    assert not claim_job(session, job_id="job_1", worker="b", lease_s=60)
    job = session.get(Job, "job_1")
    assert job is not None and job.worker == "a" and job.attempts == 1 and job.lease_expires_at is not None


def test_only_the_claiming_worker_can_report_progress_or_finish(session: Session) -> None:
    claim_job(session, job_id="job_1", worker="a", lease_s=60)
    assert not record_progress(session, job_id="job_1", worker="b", step=1, total=3, stage="denoising")
    assert record_progress(session, job_id="job_1", worker="a", step=1, total=3, stage="denoising")
    assert not finish_job(session, job_id="job_1", worker="b", result={}, runtime={})
    assert finish_job(session, job_id="job_1", worker="a", result={"x": 1}, runtime={})
    assert status(session) == "succeeded"


def test_a_finished_job_never_moves_again(session: Session) -> None:
    claim_job(session, job_id="job_1", worker="a", lease_s=60)
    assert fail_job(session, job_id="job_1", worker="a", code="render_failed", message="boom")
    assert not finish_job(session, job_id="job_1", worker="a", result={}, runtime={})
    assert not claim_job(session, job_id="job_1", worker="a", lease_s=60)
    assert not fail_job(session, job_id="job_1", worker=None, code="x", message="y")
    assert status(session) == "failed"


def test_a_queued_job_can_fail_before_any_worker_has_it(session: Session) -> None:
    assert fail_job(session, job_id="job_1", worker=None, code="queue_unavailable", message="no broker")
    assert status(session) == "failed"


def test_the_transition_table_has_no_exit_from_terminal_states() -> None:
    for src in TERMINAL:
        assert not any(can_move(src, dst) for dst in JobStatus)
    assert can_move(JobStatus.QUEUED, JobStatus.RUNNING) and not can_move(JobStatus.QUEUED, JobStatus.SUCCEEDED)


def test_a_move_the_table_does_not_allow_cannot_be_built() -> None:
    for src in TERMINAL:
        for dst in JobStatus:
            with pytest.raises(ValueError, match="cannot move"):
                Move(src, dst)
    with pytest.raises(ValueError, match="from queued to succeeded"):
        Move(JobStatus.QUEUED, JobStatus.SUCCEEDED)


def test_the_table_is_what_guards_the_updates(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a table that no longer lets a queued job be failed or canceled
    monkeypatch.setitem(TRANSITIONS, JobStatus.QUEUED, frozenset({JobStatus.RUNNING}))
    # When the API fails a queued job, Then the state machine itself refuses, and the row stays as it was
    with pytest.raises(ValueError, match="from queued to failed"):
        fail_job(session, job_id="job_1", worker=None, code="queue_unavailable", message="no broker")
    assert status(session) == "queued"
