"""Per-key limits held in Redis (so they hold across API replicas), and a full queue."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from models.migrate import upgrade
from models.settings import Settings
from tests.stack import API_KEY, sample_png

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
