"""Retention, enforced by the maintenance pass against SQLite and S3 over HTTP (moto's server): expired results
and grids are deleted and marked, in bounded batches, and nothing a running, recent or reusing job (or a busy
sweep) still needs; the API (and the SDK's download) says so (null result, result_expired_at, 410 result_expired)
and never reuses a result that may be going; idempotency keys past their retention are forgotten, fresh ones still
deduplicate."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from fastapi.testclient import TestClient
from sqlalchemy import event, text, update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.services.jobs import reusable_result
from client._http import SvdqError, finished
from models.db import create_db_engine, create_session_factory
from models.events import JobSignals
from models.keys import store_key
from models.lifecycle import Effects
from models.migrate import upgrade
from models.settings import Settings
from models.storage import LocalStore, S3Store, job_key
from models.tables import ApiKey, IdempotencyKey, Image, Job, Sweep, SweepGrid, utcnow
from ops.harness.databases import postgres_database
from ops.harness.images import sample_png
from worker.maintenance import Maintenance
from worker.retention import RESULTS_BATCH, expirable_results, expire_grids, expire_idempotency_keys, expire_results

DAY = 86400.0
WEEK = 7 * DAY
API_KEY = "svdq_retention_key_1234567890"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with postgres_database() if request.param == "postgresql" else nullcontext(f"sqlite:///{tmp_path}/r.db") as url:
        upgrade(url)
        engine = create_db_engine(url)
        sessions = create_session_factory(engine)
        with sessions() as s:
            key = store_key(s, API_KEY, name="r")
            s.add(Image(id="img_r", owner_id=key.id, sha256="0" * 64, width=8, height=8, content_type="image/png",
                        bytes=1, storage_key="images/img_r.png", created_at=utcnow()))
            s.commit()
        yield sessions
        engine.dispose()


def db_url(sessions: sessionmaker[Session]) -> str:
    return str(sessions.kw["bind"].url.render_as_string(hide_password=False))


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    store = S3Store("retention-" + secrets.token_hex(4), "svdq", endpoint_url=s3_endpoint, region="us-east-1",
                    presign_expiry_s=60)
    store.ensure_bucket()
    return store


def owner(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        return s.query(ApiKey).one().id


def add_job(sessions: sessionmaker[Session], store: LocalStore | S3Store, job_id: str, *, status: str = "succeeded",
            ended_ago_s: float | None = None, reused_from: str | None = None, sweep_id: str | None = None,
            fingerprint: str | None = None, runtime: dict[str, Any] | None = None) -> dict[str, str]:
    """A job row; a succeeded one with its video and poster in the store (a reused one with its source's)."""
    now = utcnow()
    source = reused_from or job_id
    keys = {"video_key": job_key(source, "video.mp4"), "poster_key": job_key(source, "poster.jpg")}
    if status in ("succeeded", "running") and reused_from is None:  # a running one may have uploaded already
        for k in keys.values():
            store.put(k, b"bytes of " + k.encode(), "application/octet-stream")
    result = {**keys, "content_type": "video/mp4", "bytes": 9, "sha256": "0" * 64, "frames": 2, "width": 8,
              "height": 8, "fps": 7}
    with sessions() as s:
        s.add(Job(id=job_id, owner_id=owner(sessions), status=status, model="tiny", image_id="img_r", params={},
                  output={"format": "mp4"}, priority=5, attempts=1, progress_step=0, progress_total=1,
                  created_at=now - timedelta(seconds=(ended_ago_s or 0) + 60),
                  finished_at=None if ended_ago_s is None else now - timedelta(seconds=ended_ago_s),
                  result=result if status == "succeeded" else None, reused_from=reused_from, sweep_id=sweep_id,
                  fingerprint=fingerprint, runtime=runtime))
        s.commit()
    return keys


def add_sweep(sessions: sessionmaker[Session], store: LocalStore | S3Store, sweep_id: str, *,
              grid_ago_s: float) -> dict[str, str]:
    keys = {"video_key": f"sweeps/{sweep_id}/img_r/grid.mp4", "poster_key": f"sweeps/{sweep_id}/img_r/grid.jpg"}
    for k in keys.values():
        store.put(k, b"grid", "application/octet-stream")
    with sessions() as s:
        spec = {"images": ["img_r"], "params": {}, "axes": {"seed": [1, 2]}, "output": {"format": "mp4"},
                "postprocess": None, "priority": 5}
        s.add(Sweep(id=sweep_id, owner_id=owner(sessions), name="s", model="tiny", spec=spec, total=2,
                    created_at=utcnow() - timedelta(days=30)))
        s.flush()
        s.add(SweepGrid(sweep_id=sweep_id, image_id="img_r", position=0, status="done",
                        updated_at=utcnow() - timedelta(seconds=grid_ago_s), **keys))
        s.commit()
    return keys


def stored(store: LocalStore | S3Store, keys: dict[str, str]) -> bool:
    present = [store.exists(k) for k in keys.values()]
    assert len(set(present)) == 1, keys  # both or neither
    return present[0]


def expired_at(sessions: sessionmaker[Session], job_id: str) -> Any:
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.result_expired_at


def test_expired_results_go_and_what_a_running_recent_or_reusing_job_or_busy_sweep_needs_stays(
        db: sessionmaker[Session], s3: S3Store) -> None:
    # Given, with a week's retention:
    old = add_job(db, s3, "job_old", ended_ago_s=8 * DAY)
    recent = add_job(db, s3, "job_recent", ended_ago_s=6 * DAY)
    running = add_job(db, s3, "job_running", status="running")
    queued = add_job(db, s3, "job_queued", status="queued")
    # an old render that a job reused an hour ago, and one whose only reuser is old too
    popular = add_job(db, s3, "job_popular", ended_ago_s=30 * DAY)
    add_job(db, s3, "job_reuser_new", ended_ago_s=3600, reused_from="job_popular")
    forgotten = add_job(db, s3, "job_forgotten", ended_ago_s=9 * DAY)
    add_job(db, s3, "job_reuser_old", ended_ago_s=8 * DAY, reused_from="job_forgotten")
    add_job(db, s3, "job_failed", status="failed", ended_ago_s=8 * DAY)
    # a sweep with an old cell and a running one (and an old grid), and a sweep that ended long ago
    busy_grid = add_sweep(db, s3, "swp_busy", grid_ago_s=8 * DAY)
    busy_cell = add_job(db, s3, "job_busy_cell", ended_ago_s=8 * DAY, sweep_id="swp_busy")
    add_job(db, s3, "job_busy_running", status="running", sweep_id="swp_busy")
    done_grid = add_sweep(db, s3, "swp_done", grid_ago_s=8 * DAY)
    done_cell = add_job(db, s3, "job_done_cell", ended_ago_s=8 * DAY, sweep_id="swp_done")

    # When the retention steps run
    with db() as s:
        results = expire_results(s, s3, retention_s=WEEK)
        grids = expire_grids(s, s3, retention_s=WEEK)

    # Then exactly the expired renders and the ended sweep's grid went, and their rows say so
    assert (results, grids) == (3, 1)
    for keys in (old, forgotten, done_cell, done_grid):
        assert not stored(s3, keys)
    for job_id in ("job_old", "job_forgotten", "job_reuser_old", "job_done_cell"):
        assert expired_at(db, job_id) is not None, job_id
    with db() as s:
        grid = s.get(SweepGrid, ("swp_done", "img_r"))
        assert grid is not None and grid.status == "expired"
        busy = s.get(SweepGrid, ("swp_busy", "img_r"))
        assert busy is not None and busy.status == "done"
    # and everything still needed is there, unmarked
    for keys in (recent, running, popular, busy_cell, busy_grid):
        assert stored(s3, keys)
    assert not stored(s3, queued)  # it never had objects: nothing was made up for it
    for job_id in ("job_recent", "job_running", "job_queued", "job_popular", "job_reuser_new", "job_failed",
                   "job_busy_cell"):
        assert expired_at(db, job_id) is None, job_id

    # and a second pass finds nothing more to do
    with db() as s:
        assert (expire_results(s, s3, retention_s=WEEK), expire_grids(s, s3, retention_s=WEEK)) == (0, 0)
    # while retention 0 keeps everything forever, however old
    with db() as s:
        assert expire_results(s, s3, retention_s=0) == expire_grids(s, s3, retention_s=0) == 0
        assert expire_results(s, s3, retention_s=DAY) == 1  # job_recent, once the retention is shorter
    assert not stored(s3, recent) and stored(s3, popular)


def test_a_pass_deletes_a_bounded_batch_oldest_first(db: sessionmaker[Session], s3: S3Store) -> None:
    keys = [add_job(db, s3, f"job_b{i}", ended_ago_s=(20 - i) * DAY) for i in range(5)]
    with db() as s:
        assert [expire_results(s, s3, retention_s=WEEK, batch=2) for _ in range(4)] == [2, 2, 1, 0]
    assert [stored(s3, k) for k in keys] == [False] * 5
    add_job(db, s3, "job_c0", ended_ago_s=9 * DAY)
    add_job(db, s3, "job_c1", ended_ago_s=10 * DAY)
    with db() as s:
        assert expire_results(s, s3, retention_s=WEEK, batch=1) == 1
    assert expired_at(db, "job_c1") is not None and expired_at(db, "job_c0") is None  # the older first


def test_an_expired_result_reads_as_expired_and_its_files_answer_410(
        db: sessionmaker[Session], tmp_path: Path, redis_url: str) -> None:
    results = LocalStore(tmp_path / "results")
    add_job(db, results, "job_gone", ended_ago_s=8 * DAY)
    add_job(db, results, "job_kept", ended_ago_s=DAY)
    expired_grid = add_sweep(db, results, "swp_gone", grid_ago_s=8 * DAY)
    with db() as s:
        assert expire_results(s, results, retention_s=WEEK) == 1
        assert expire_grids(s, results, retention_s=WEEK) == 1
    assert not stored(results, expired_grid)
    settings = Settings(_env_file=None, database_url=db_url(db), storage_url=f"file://{tmp_path}/results",  # type: ignore[call-arg]
                        redis_url=redis_url + "/12")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with TestClient(create_app(settings)) as client:
        gone = client.get("/v1/jobs/job_gone", headers=headers).json()
        assert gone["status"] == "succeeded" and gone["result"] is None and gone["result_expired_at"]
        kept = client.get("/v1/jobs/job_kept", headers=headers).json()
        assert kept["result"]["video_url"] and kept["result_expired_at"] is None
        for path in ("/v1/jobs/job_gone/video", "/v1/jobs/job_gone/poster",
                     "/v1/sweeps/swp_gone/grids/img_r/video"):
            r = client.get(path, headers=headers)
            assert r.status_code == 410, (path, r.text)
            error = r.json()["error"]
            assert error["code"] == "result_expired" and "SVDQ_RESULT_RETENTION_S" in error["message"]
        assert "POST /v1/jobs/job_gone/rerun" in client.get("/v1/jobs/job_gone/video", headers=headers).json()[
            "error"]["message"]
        assert client.get("/v1/jobs/job_kept/video", headers=headers).status_code == 200
        sweep = client.get("/v1/sweeps/swp_gone", headers=headers).json()
        assert sweep["grids"][0]["status"] == "expired" and sweep["grids"][0]["video_url"] is None
        # and the SDK's download (its op, answered by this API) says the same instead of "not finished"
        op = finished("job_gone")
        call = next(op)
        with pytest.raises(SvdqError) as err:
            op.send(client.request(call.method, call.path, headers=headers).json())
        assert (err.value.status, err.value.code) == (410, "result_expired")


def test_a_result_near_or_past_its_retention_is_never_reused_at_submit(
        db: sessionmaker[Session], tmp_path: Path, redis_url: str) -> None:
    results = LocalStore(tmp_path / "results")
    settings = Settings(_env_file=None, database_url=db_url(db),  # type: ignore[call-arg]
                        storage_url=f"file://{tmp_path}/results", redis_url=redis_url + "/12",
                        result_retention_s=WEEK)
    app = create_app(settings)
    state = app.state.svdq
    state.revisions.put("tiny", frozenset({"rev1"}))  # as if a ready worker held revision rev1
    with db() as s:
        key = s.query(ApiKey).one()

    def reused(fp: str) -> str | None:
        with db() as s:
            job = reusable_result(state=state, session=s, key=key, model="tiny", fp=fp)
            return job.id if job is not None else None

    for job_id, ago in (("job_fresh", DAY), ("job_edge", WEEK - 60), ("job_marked", DAY)):
        add_job(db, results, job_id, ended_ago_s=ago, fingerprint="fp_" + job_id, runtime={"revision": "rev1"})
    with db() as s:
        s.execute(update(Job).where(Job.id == "job_marked").values(result_expired_at=utcnow()))
        s.commit()
    # a fresh one is reused; one a pass may delete any minute, or one already deleted, is rendered afresh
    assert reused("fp_job_fresh") == "job_fresh"
    assert reused("fp_job_edge") is None
    assert reused("fp_job_marked") is None
    state.engine.dispose()


def submit(client: TestClient, image_id: str, key: str, seed: int = 1) -> tuple[int, str]:
    r = client.post("/v1/jobs", headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key},
                    json={"model": "tiny", "image_id": image_id, "params": {"seed": seed}, "reuse": False})
    assert r.status_code in (200, 202), r.text
    return r.status_code, r.json()["id"]


def age_key(sessions: sessionmaker[Session], key: str, by_s: float) -> None:
    with sessions() as s:
        s.execute(update(IdempotencyKey).where(IdempotencyKey.key == key)
                  .values(created_at=utcnow() - timedelta(seconds=by_s)))
        s.commit()


def test_an_expired_idempotency_key_makes_a_new_job_and_a_fresh_one_still_deduplicates(
        db: sessionmaker[Session], tmp_path: Path, redis_url: str) -> None:
    settings = Settings(_env_file=None, database_url=db_url(db),  # type: ignore[call-arg]
                        storage_url=f"file://{tmp_path}/results", redis_url=redis_url + "/12",
                        idempotency_retention_s=DAY)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/images", headers={"Authorization": f"Bearer {API_KEY}"},
                        files={"image": ("in.png", sample_png(), "image/png")})
        image_id = r.json()["id"]
        # Given three keys used once each, two of them now older than the retention
        _, swept = submit(client, image_id, "k-swept")
        _, fresh = submit(client, image_id, "k-fresh")
        submit(client, image_id, "k-other")
        age_key(db, "k-swept", DAY + 120)
        age_key(db, "k-other", DAY + 60)
        age_key(db, "k-fresh", DAY - 600)

        # When the maintenance step runs: it deletes the expired keys only, oldest first, a bounded batch a pass
        with db() as s:
            assert expire_idempotency_keys(s, retention_s=DAY, batch=1) == 1
            assert {k.key for k in s.query(IdempotencyKey)} == {"k-other", "k-fresh"}
            s.rollback()
            assert expire_idempotency_keys(s, retention_s=DAY, batch=1) == 1
            assert expire_idempotency_keys(s, retention_s=DAY) == 0
            assert {k.key for k in s.query(IdempotencyKey)} == {"k-fresh"}

        # Then reusing the expired key creates a new job, and the fresh key still answers with its first job
        status, again = submit(client, image_id, "k-swept")
        assert status == 202 and again != swept
        assert submit(client, image_id, "k-swept") == (200, again)  # and that new use deduplicates in turn
        assert submit(client, image_id, "k-fresh") == (200, fresh)

        # and a key past its retention that no pass deleted yet is forgotten all the same
        age_key(db, "k-swept", DAY + 60)
        status, third = submit(client, image_id, "k-swept")
        assert status == 202 and third not in (swept, again)
        assert submit(client, image_id, "k-swept") == (200, third)


def test_the_maintenance_pass_runs_the_retention_steps(db: sessionmaker[Session], s3: S3Store,
                                                       redis_url: str) -> None:
    old = add_job(db, s3, "job_old", ended_ago_s=8 * DAY)
    recent = add_job(db, s3, "job_recent", ended_ago_s=DAY)
    with db() as s:
        s.add(IdempotencyKey(owner_id=owner(db), key="k-old", request_hash="h", resource_id="job_old",
                             created_at=utcnow() - timedelta(days=2)))
        s.add(IdempotencyKey(owner_id=owner(db), key="k-new", request_hash="h", resource_id="job_recent",
                             created_at=utcnow()))
        s.commit()
    r = redis_lib.Redis.from_url(redis_url + "/13")
    fx = Effects(signals=JobSignals(r), enqueue=lambda *a: None, enqueue_grid=lambda *a: None)
    m = Maintenance(sessions=db, fx=fx, max_attempts=3, interval_s=1, reconcile_after_s=1, store=s3,
                    idempotency_retention_s=DAY, result_retention_s=WEEK)
    counts = m.run_once()
    assert (counts["keys_expired"], counts["results_expired"], counts["grids_expired"]) == (1, 1, 0)
    assert not stored(s3, old) and stored(s3, recent)
    with db() as s:
        assert {k.key for k in s.query(IdempotencyKey)} == {"k-new"}
    r.close()


def test_a_pass_reads_an_index_range_in_order_however_many_jobs_postgresql_holds() -> None:
    # Given 30 000 rendered jobs, a third of them long ended with their results still stored, some reused or in sweeps
    with postgres_database() as url:
        upgrade(url)
        engine = create_db_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO api_keys (id, name, prefix, key_hash, is_admin, created_at) "
                              "VALUES ('k', 'k', 'svdq_plan', 'h', false, now())"))
            conn.execute(text("INSERT INTO images (id, owner_id, sha256, width, height, content_type, bytes, "
                              "storage_key, created_at) VALUES ('i', 'k', 's', 8, 8, 'image/png', 1, 'k', now())"))
            conn.execute(text(
                "INSERT INTO jobs (id, owner_id, status, model, image_id, params, output, priority, attempts, "
                "progress_step, progress_total, created_at, finished_at, sweep_id, reused_from) "
                "SELECT 'j' || g, 'k', 'succeeded', 'tiny', 'i', '{}', '{}', 5, 1, 1, 1, now(), "
                "now() - (g || ' minutes')::interval, CASE WHEN g % 7 = 0 THEN 's' || (g / 70) END, "
                "CASE WHEN g % 11 = 0 AND g > 20000 THEN 'j' || (g - 10000) END FROM generate_series(1, 30000) g"))
            conn.execute(text("ANALYZE jobs"))
        statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, stmt, params, ctx, many: statements.append((stmt, params)))
        # When the pass picks its batch of results to delete
        with create_session_factory(engine)() as s:
            assert len(expirable_results(s, before=utcnow() - timedelta(days=7), limit=RESULTS_BATCH)) == RESULTS_BATCH
        stmt, params = statements[-1]
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("EXPLAIN " + stmt, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            raw.close()
        engine.dispose()
    # Then it walks the retention index in end order and stops at the batch: no sort of every candidate, no scan
    # or hash of the jobs table, each check of a candidate an index probe
    assert "Index Scan using ix_jobs_result_expiry on jobs src" in plan, plan
    assert "Sort" not in plan and "Hash" not in plan and "Seq Scan" not in plan, plan
