"""The job series of /metrics without a scan of the jobs table: finished-job counters kept in the transaction that
ends each job (once per job, monotonic, the same after an API restart, on SQLite and PostgreSQL, with concurrent
finishers), and queued/running gauges read from an index range over only the open rows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, event, text
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from models.db import create_db_engine, create_session_factory
from models.job_counts import finished_totals
from models.keys import store_key
from models.migrate import upgrade
from models.settings import Settings
from models.states import claim_job, fail_job, finish_job, request_cancel
from models.tables import Image, Job, utcnow
from ops.harness.databases import postgres_database

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def seed(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        key = store_key(s, "svdq_counts_key_123456", name="counts")
        s.add(Image(id="img_c", owner_id=key.id, sha256="0" * 64, width=8, height=8, content_type="image/png",
                    bytes=1, storage_key="images/img_c.png", created_at=utcnow()))
        s.commit()
        return key.id


def add_jobs(sessions: sessionmaker[Session], owner: str, prefix: str, n: int, model: str = "tiny") -> list[str]:
    ids = [f"job_{prefix}{i}" for i in range(n)]
    with sessions() as s:
        s.add_all(Job(id=j, owner_id=owner, status="queued", model=model, image_id="img_c", params={},
                      output={"format": "mp4"}, priority=5, attempts=0, progress_step=0, progress_total=1,
                      created_at=utcnow()) for j in ids)
        s.commit()
    return ids


def run_and_finish(sessions: sessionmaker[Session], job_id: str, worker: str = "w1") -> bool:
    with sessions() as s:
        assert claim_job(s, job_id=job_id, worker=worker, lease_s=60)
        return finish_job(s, job_id=job_id, worker=worker, result={"video_key": "v"}, runtime={})


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session]]]:
    with postgres_database() if request.param == "postgresql" else nullcontext(f"sqlite:///{tmp_path}/c.db") as url:
        upgrade(url)
        engine = create_db_engine(url)
        yield url, create_session_factory(engine)
        engine.dispose()


def finished(sessions: sessionmaker[Session]) -> dict[tuple[str, str], int]:
    with sessions() as s:
        return finished_totals(s)


def test_each_job_counts_once_when_it_ends_and_the_counters_never_fall(db: tuple[str, sessionmaker[Session]]) -> None:
    _, sessions = db
    owner = seed(sessions)
    a, b, c, d = add_jobs(sessions, owner, "x", 4)
    assert finished(sessions) == {}

    # When one job succeeds and a second finish of it loses the race
    assert run_and_finish(sessions, a)
    with sessions() as s:
        assert not finish_job(s, job_id=a, worker="w1", result={}, runtime={})
        assert not fail_job(s, job_id=a, worker="w1", code="x", message="late")
    assert finished(sessions) == {("tiny", "succeeded"): 1}

    # and one fails on a worker, one is canceled in the queue (twice), one is canceled while running (flag only)
    with sessions() as s:
        assert claim_job(s, job_id=b, worker="w2", lease_s=60)
        assert fail_job(s, job_id=b, worker="w2", code="render_failed", message="boom")
        assert request_cancel(s, job_id=c) == "canceled"
        assert request_cancel(s, job_id=c) is None
        assert claim_job(s, job_id=d, worker="w3", lease_s=60)
        assert request_cancel(s, job_id=d) == "requested"
    assert finished(sessions) == {("tiny", "succeeded"): 1, ("tiny", "failed"): 1, ("tiny", "canceled"): 1}

    # Then deleting the ended rows takes nothing back: a counter only rises
    with sessions() as s:
        s.execute(delete(Job).where(Job.id.in_([a, b, c])))
        s.commit()
    assert finished(sessions) == {("tiny", "succeeded"): 1, ("tiny", "failed"): 1, ("tiny", "canceled"): 1}


def test_concurrent_finishers_are_each_counted(db: tuple[str, sessionmaker[Session]]) -> None:
    _, sessions = db
    owner = seed(sessions)
    ids = add_jobs(sessions, owner, "c", 48)
    errors: list[BaseException] = []

    def finish_some(chunk: list[str], worker: str) -> None:
        try:
            for job_id in chunk:
                assert run_and_finish(sessions, job_id, worker)
        except BaseException as exc:  # the test asserts on it below
            errors.append(exc)

    threads = [threading.Thread(target=finish_some, args=(ids[i::6], f"w{i}")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert finished(sessions) == {("tiny", "succeeded"): 48}


def parse(body: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_a_scrape_reads_only_open_jobs_by_index_and_its_counters_survive_an_api_restart(
        tmp_path: Path, redis_url: str) -> None:
    # Given a database holding many ended jobs (through the real transitions), three queued and one running
    url = f"sqlite:///{tmp_path}/scrape.db"
    upgrade(url)
    engine = create_db_engine(url)
    sessions = create_session_factory(engine)
    owner = seed(sessions)
    done = add_jobs(sessions, owner, "d", 60)
    for job_id in done[:50]:
        assert run_and_finish(sessions, job_id)
    with sessions() as s:
        for job_id in done[50:]:
            assert fail_job(s, job_id=job_id, worker=None, code="queue_unavailable", message="refused")
    add_jobs(sessions, owner, "q", 3)
    running = add_jobs(sessions, owner, "r", 1)[0]
    with sessions() as s:
        assert claim_job(s, job_id=running, worker="w1", lease_s=60)
    settings = Settings(_env_file=None, database_url=url, storage_url=f"file://{tmp_path}/results",  # type: ignore[call-arg]
                        redis_url=redis_url + "/11")

    # When Prometheus scrapes, with every statement the API sends recorded
    statements: list[tuple[str, Any]] = []
    with TestClient(app := create_app(settings)) as client:
        listener = lambda conn, cursor, stmt, params, ctx, many: statements.append((stmt, params))  # noqa: E731
        event.listen(app.state.svdq.engine, "before_cursor_execute", listener)
        first = parse(client.get("/metrics").text)
        event.remove(app.state.svdq.engine, "before_cursor_execute", listener)

    # Then the series say what the jobs did, zeros included for statuses and models without a job
    assert value(first, "svdq_jobs_finished_total", model="tiny", status="succeeded") == 50
    assert value(first, "svdq_jobs_finished_total", model="tiny", status="failed") == 10
    assert value(first, "svdq_jobs_finished_total", model="tiny", status="canceled") == 0
    assert value(first, "svdq_jobs_finished_total", model="svd", status="succeeded") == 0
    assert value(first, "svdq_jobs_queued", model="tiny") == 3
    assert value(first, "svdq_jobs_running", model="tiny") == 1
    assert value(first, "svdq_jobs_running", model="svd") == 0
    # and no statement scanned the jobs table: each that reads it searches the status index for open rows only
    on_jobs = [(stmt, params) for stmt, params in statements if " jobs" in stmt]
    assert on_jobs, statements
    with engine.connect() as conn:
        for stmt, params in on_jobs:
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt, params))
            assert "SCAN jobs" not in plan and "SEARCH jobs USING COVERING INDEX ix_jobs_status_model" in plan, (
                stmt, plan)

    # When one more job succeeds and the API restarts
    assert run_and_finish(sessions, add_jobs(sessions, owner, "z", 1)[0])
    with TestClient(create_app(settings)) as client:
        second = parse(client.get("/metrics").text)

    # Then the counter rose by exactly that job, and nothing it counted before is lost
    assert value(second, "svdq_jobs_finished_total", model="tiny", status="succeeded") == 51
    assert value(second, "svdq_jobs_finished_total", model="tiny", status="failed") == 10
    engine.dispose()


def test_the_migration_seeds_the_counters_from_the_jobs_that_ended_before_it(tmp_path: Path) -> None:
    # Given a database at the revision before the counters, with jobs that ended under it
    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0007_webhook_events")
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO api_keys (id, name, prefix, key_hash, is_admin, created_at) "
                          "VALUES ('key_o', 'o', 'svdq_old', 'h', 0, '2024-01-01')"))
        conn.execute(text("INSERT INTO images (id, owner_id, sha256, width, height, content_type, bytes, "
                          "storage_key, created_at) VALUES ('img_o', 'key_o', 'x', 8, 8, 'image/png', 1, 'k', "
                          "'2024-01-01')"))
        for i, status in enumerate(["succeeded", "succeeded", "failed", "queued", "running"]):
            conn.execute(text("INSERT INTO jobs (id, owner_id, status, model, image_id, params, output, priority, "
                              "attempts, progress_step, progress_total, created_at) VALUES (:id, 'key_o', :status, "
                              "'svd', 'img_o', '{}', '{}', 5, 0, 0, 1, '2024-01-01')"),
                         {"id": f"job_o{i}", "status": status})
    # When it is upgraded
    upgrade(url)
    # Then the counters start from what had ended, and open jobs are not among them
    assert finished(create_session_factory(engine)) == {("svd", "succeeded"): 2, ("svd", "failed"): 1}
    engine.dispose()
