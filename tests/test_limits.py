"""Per-key limits held in Redis (so they hold across API replicas), and a full queue."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from models.migrate import upgrade
from models.settings import Settings
from ops.harness import ROOT
from ops.harness.images import sample_png
from ops.harness.stack import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}


def replica(tmp_path: Path, redis_url: str, **over: object) -> TestClient:
    db = f"sqlite:///{tmp_path}/lim.db"
    upgrade(db)
    settings = Settings(_env_file=None, database_url=db, storage_url=f"file://{tmp_path}/r",
                        redis_url=redis_url + "/6", bootstrap_api_key=API_KEY, **over)  # type: ignore[arg-type]
    return TestClient(create_app(settings))


def test_requests_over_the_per_key_rate_are_429_across_replicas(tmp_path: Path, redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url + "/6").flushdb()
    with replica(tmp_path, redis_url, rate_limit_per_s=5) as a, replica(tmp_path, redis_url, rate_limit_per_s=5) as b:
        answers = [(a if i % 2 else b).get("/v1/jobs", headers=H) for i in range(12)]
    codes = [r.status_code for r in answers]
    # two replicas, one shared count: at most 5 (or 10 if the second ticked over) pass, the rest are refused
    assert codes.count(200) <= 10 and codes.count(429) >= 2, codes
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
    # the open routes are never limited
    with replica(tmp_path, redis_url, rate_limit_per_s=1) as c:
        assert all(c.get("/healthz").status_code == 200 for _ in range(5))


def test_a_full_queue_is_503_and_too_many_open_jobs_is_429(tmp_path: Path, redis_url: str) -> None:
    with replica(tmp_path, redis_url, max_queue_depth=2, rate_limit_per_s=0) as c:
        image = c.post("/v1/images", headers=H, files={"image": ("a.png", sample_png())}).json()
        body = {"model": "svd", "image_id": image["id"]}  # no svd worker here: the jobs stay queued
        assert [c.post("/v1/jobs", headers=H, json=body).status_code for _ in range(2)] == [202, 202]
        r = c.post("/v1/jobs", headers=H, json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full" and r.headers["retry-after"]
    with replica(tmp_path, redis_url, max_open_jobs_per_key=2, rate_limit_per_s=0) as c:
        r = c.post("/v1/jobs", headers=H, json=body)
        assert r.status_code == 429 and "limit is 2" in r.json()["error"]["message"]
        sweep = c.post("/v1/sweeps", headers=H, json={"model": "tiny", "images": [{"image_id": image["id"]}],
                                                      "axes": {"fps": [6, 7]}})
        assert sweep.status_code == 429


def _cli(db: str, *argv: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """`svdq ...` against this database (and, like an operator's shell, the service's Redis: key changes are
    announced there, so the API's key cache lets go of them at once)."""
    env = {**os.environ, "SVDQ_DATABASE_URL": db, **({"SVDQ_REDIS_URL": redis_url} if redis_url else {})}
    return subprocess.run([sys.executable, "-m", "client.cli", *argv], env=env, cwd=ROOT, capture_output=True,
                          text=True)


def test_a_keys_own_limits_override_the_service_wide_ones(tmp_path: Path, redis_url: str) -> None:
    # Given a service that allows 500 cells per sweep and 50 requests/s, and a key created with tighter limits
    with replica(tmp_path, redis_url) as c:
        db = f"sqlite:///{tmp_path}/lim.db"
        made = _cli(db, "keys", "create", "--name", "small", "--max-sweep-cells", "2", "--max-open-jobs", "1",
                    "--rate-limit", "0")
        assert made.returncode == 0, made.stderr
        small = {"Authorization": f"Bearer {made.stdout.strip()}"}
        assert c.get("/v1/keys/self", headers=small).json()["limits"] == {
            "rate_limit_per_s": 0, "max_open_jobs": 1, "max_sweep_cells": 2}
        assert c.get("/v1/keys/self", headers=H).json()["limits"]["max_sweep_cells"] == 500
        image = c.post("/v1/images", headers=small, files={"image": ("a.png", sample_png())}).json()
        sweep = {"model": "svd", "images": [{"image_id": image["id"]}], "axes": {"fps": [6, 7, 8]}}
        # When the small key asks for 3 cells, Then it is refused with the field named and nothing is created
        r = c.post("/v1/sweeps", headers=small, json=sweep)
        assert r.status_code == 422, r.text
        assert any(d["field"] == "axes" and "limit of 2" in d["message"] for d in r.json()["error"]["details"])
        assert c.get("/v1/jobs", headers=small).json()["items"] == []
        # and a second open job is over its limit of 1 (the bootstrap key's limit is untouched)
        body = {"model": "svd", "image_id": image["id"]}
        assert c.post("/v1/jobs", headers=small, json=body).status_code == 202
        r = c.post("/v1/jobs", headers=small, json=body)
        assert r.status_code == 429 and "limit is 1" in r.json()["error"]["message"]
        # When the operator puts the cell limit back to the default, Then the same sweep is taken
        key_id = c.get("/v1/keys/self", headers=small).json()["id"]
        reset = _cli(db, "keys", "set-limits", key_id, "--max-sweep-cells", "default", "--max-open-jobs", "10",
                     redis_url=redis_url + "/6")
        assert reset.returncode == 0, reset.stderr
        assert c.post("/v1/sweeps", headers=small, json=sweep).status_code == 202
        assert "max_open_jobs=10" in _cli(db, "keys", "list").stdout
        # bad values are refused by the command, naming what to give
        bad = _cli(db, "keys", "set-limits", key_id, "--rate-limit", "-3")
        assert bad.returncode == 2 and "negative" in bad.stderr
        assert _cli(db, "keys", "set-limits", "key_nope", "--rate-limit", "1").returncode == 2


def test_a_keys_own_rate_limit_is_enforced(tmp_path: Path, redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url + "/6").flushdb()
    with replica(tmp_path, redis_url, rate_limit_per_s=1000) as c:
        made = _cli(f"sqlite:///{tmp_path}/lim.db", "keys", "create", "--name", "slow", "--rate-limit", "2")
        slow = {"Authorization": f"Bearer {made.stdout.strip()}"}
        codes = [c.get("/v1/jobs", headers=slow).status_code for _ in range(8)]
        assert codes.count(429) >= 4, codes  # at most 2 per second (4 if the second ticked over)
        assert all(c.get("/v1/jobs", headers=H).status_code == 200 for _ in range(8))


def test_a_keys_open_jobs_are_counted_in_sql_once_per_ttl_and_a_refusal_is_rechecked(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    import api.quotas as limits
    from models.db import session_scope
    from models.tables import Job

    redis.Redis.from_url(redis_url + "/6").flushdb()
    counted: list[int] = []
    real_count = limits._count_open_jobs
    monkeypatch.setattr(limits, "_count_open_jobs", lambda *a: counted.append(1) or real_count(*a))
    monkeypatch.setattr(limits, "OPEN_JOBS_TTL_S", 60.0)
    with replica(tmp_path, redis_url, max_open_jobs_per_key=3, rate_limit_per_s=0) as c:
        image = c.post("/v1/images", headers=H, files={"image": ("a.png", sample_png())}).json()
        body = {"model": "svd", "image_id": image["id"], "reuse": False}
        # Given a key well under its limit: one SQL count, then the cached count (plus what was added) serves
        assert [c.post("/v1/jobs", headers=H, json=body).status_code for _ in range(3)] == [202] * 3
        assert len(counted) == 1
        # When the cache says the limit is reached, the refusal is checked against SQL first
        assert c.post("/v1/jobs", headers=H, json=body).status_code == 429 and len(counted) == 2
        # and a job that ended since (the cache does not see it) makes room at once
        state = c.app.state.svdq  # type: ignore[attr-defined]
        with session_scope(state.sessions) as s:
            s.query(Job).filter(Job.status == "queued").limit(1).one().status = "canceled"
        assert c.post("/v1/jobs", headers=H, json=body).status_code == 202
