"""Service routes, listing, keys, settings and enqueue failure."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from client.procs import free_port
from models.migrate import upgrade
from models.settings import Settings
from ops.harness import ROOT
from ops.harness.images import sample_png
from ops.harness.stack import API_KEY, Stack


def test_health_ready_and_models(sqlite_stack: Stack) -> None:
    c = sqlite_stack.client
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").status_code == 200
    assert c.get("/v1/models").status_code == 401
    models = {m["name"]: m for m in c.get("/v1/models", headers=sqlite_stack.headers).json()}
    assert set(models) == {"svd", "svd-xt", "svd-xt-1-1", "tiny"}
    assert models["tiny"]["workers_ready"] == 1 and models["svd"]["workers_ready"] == 0
    assert models["tiny"]["workers"][0]["device"] == "cpu"
    assert models["svd-xt"]["defaults"]["num_frames"] == 25 and models["svd"]["defaults"]["num_frames"] == 14
    assert "/v1/jobs" in c.get("/openapi.json").json()["paths"]


def test_jobs_list_newest_first_with_a_cursor(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload()
    ids = [s.submit(image["id"], params={"num_inference_steps": 1, "num_frames": 2})["id"] for _ in range(3)]
    for job_id in ids:
        s.wait(job_id)
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = s.client.get(url, headers=s.headers).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen.index(ids[2]) < seen.index(ids[1]) < seen.index(ids[0])
    assert len(seen) == len(set(seen))
    done = s.client.get("/v1/jobs?status=succeeded&limit=200", headers=s.headers).json()["items"]
    assert all(j["status"] == "succeeded" for j in done) and set(ids) <= {j["id"] for j in done}


def test_the_same_bytes_give_the_same_image_id(sqlite_stack: Stack) -> None:
    a, b = sqlite_stack.upload(sample_png(color=(1, 2, 3))), sqlite_stack.upload(sample_png(color=(1, 2, 3)))
    assert a["id"] == b["id"] and a["sha256"] == b["sha256"]
    assert sqlite_stack.upload(sample_png(color=(9, 9, 9)))["id"] != a["id"]


def app_with(tmp_path: Path, redis_url: str) -> TestClient:
    db = f"sqlite:///{tmp_path}/svc.db"
    upgrade(db)
    settings = Settings(_env_file=None, database_url=db, storage_url=f"file://{tmp_path}/r", redis_url=redis_url,
                        bootstrap_api_key=API_KEY)
    return TestClient(create_app(settings))


def test_readyz_is_503_and_submits_are_503_when_redis_is_down(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with app_with(tmp_path, dead) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["details"][0]["component"] == "redis"
        h = {"Authorization": f"Bearer {API_KEY}"}
        image = c.post("/v1/images", headers=h, files={"image": ("a.png", sample_png())}).json()
        r = c.post("/v1/jobs", headers=h, json={"model": "tiny", "image_id": image["id"]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable"
        assert r.headers["retry-after"]
        # the job is not left queued forever: it is recorded as failed with the reason
        jobs = c.get("/v1/jobs", headers=h).json()["items"]
        assert [j["error"]["code"] for j in jobs] == ["queue_unavailable"]


def test_startup_objects_are_frozen_so_a_full_collection_never_walks_them(tmp_path: Path, redis_url: str) -> None:
    # a full collection of the ~150,000 objects an API process starts with paused the event loop 20-60 ms
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        with app_with(tmp_path, redis_url) as c:
            assert gc.get_freeze_count() > 10_000  # the modules, the app, its routes and schemas
            assert c.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()


@pytest.mark.timeout(60)
def test_an_api_stopped_right_after_it_started_shuts_down(tmp_path: Path, redis_url: str) -> None:
    # the stop came while the key change follower was still subscribing: redis-py swallowed that cancel and the
    # shutdown waited on the follower forever (a failing test inside a TestClient hung for its whole timeout)
    for _ in range(3):
        with app_with(tmp_path, redis_url):
            pass


def test_keys_create_prints_a_key_that_works(tmp_path: Path, redis_url: str) -> None:
    db = f"sqlite:///{tmp_path}/svc.db"
    env = {**os.environ, "SVDQ_DATABASE_URL": db}
    subprocess.run([sys.executable, "-m", "client.cli", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    out = subprocess.run([sys.executable, "-m", "client.cli", "keys", "create", "--name", "alice"], env=env,
                         cwd=ROOT, check=True, capture_output=True, text=True)
    key = out.stdout.strip()
    assert key.startswith("svdq_") and len(key) > 40
    with app_with(tmp_path, redis_url) as c:
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {key}x"}).status_code == 401


def test_a_revoked_bootstrap_key_stays_revoked_across_restarts(tmp_path: Path, redis_url: str) -> None:
    h = {"Authorization": f"Bearer {API_KEY}"}
    with app_with(tmp_path, redis_url) as c:
        key_id = c.get("/v1/keys/self", headers=h).json()["id"]
    revoked = subprocess.run([sys.executable, "-m", "client.cli", "keys", "revoke", key_id], cwd=ROOT,
                             env={**os.environ, "SVDQ_DATABASE_URL": f"sqlite:///{tmp_path}/svc.db"},
                             capture_output=True, text=True)
    assert revoked.returncode == 0, revoked.stderr
    # When the API starts again with the same SVDQ_BOOTSTRAP_API_KEY, Then it starts and the key stays refused
    with app_with(tmp_path, redis_url) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/jobs", headers=h).status_code == 401


@pytest.fixture
def no_storage_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)  # the moto fixtures set a placeholder one


@pytest.mark.usefixtures("no_storage_secret")
def test_settings_refuse_placeholder_secrets_outside_dev() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(_env_file=None, env="prod", bootstrap_api_key="changeme")
    Settings(_env_file=None, env="dev", bootstrap_api_key="changeme")
    Settings(_env_file=None, env="prod", bootstrap_api_key="svdq_" + "x" * 40)


@pytest.mark.parametrize("field, value, named", [
    ("database_url", "postgresql+psycopg://svdq:svdq@db/svdq", "SVDQ_DATABASE_URL"),
    ("database_url", "postgresql+psycopg://svdq:short1@db/svdq", "SVDQ_DATABASE_URL"),
    ("redis_url", "redis://:changeme@redis:6379/0", "SVDQ_REDIS_URL"),
])
@pytest.mark.usefixtures("no_storage_secret")
def test_settings_refuse_placeholder_passwords_in_urls_outside_dev(field: str, value: str, named: str) -> None:
    with pytest.raises(ValueError, match=named) as refused:
        Settings(_env_file=None, env="prod", **{field: value})  # type: ignore[arg-type]
    # the refusal names the setting but never echoes the secret
    assert value.split("@")[0].split(":")[-1] not in str(refused.value)
    Settings(_env_file=None, env="dev", **{field: value})  # type: ignore[arg-type]


def test_settings_refuse_a_placeholder_storage_secret_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minioadmin")
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        Settings(_env_file=None, env="prod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "k3Jd9sLq0pWm2xVb7nRt")
    good = Settings(_env_file=None, env="prod", database_url="postgresql+psycopg://svdq:k3Jd9sLq0pWm2xVb@db/svdq")
    assert "k3Jd9sLq0pWm2xVb" not in repr(good)  # the settings' repr hides every secret


def test_200_concurrent_status_polls_are_all_answered_without_a_5xx(pg_s3_stack: Stack) -> None:
    """More requests in flight than pooled database connections once deadlocked the pool (500s after the
    pool timeout); the API now admits at most max_concurrent_requests at a time and queues the rest."""
    import asyncio

    import httpx

    s = pg_s3_stack
    base = s.serve()
    image = s.upload()
    job = s.submit(image["id"], model="svd")  # no svd worker: it stays queued, so its view counts its position

    async def poll_all() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=base, headers=s.headers, timeout=60, limits=limits) as c:
            async def one(_: int) -> int:
                return (await c.get(f"/v1/jobs/{job['id']}")).status_code
            return list(await asyncio.gather(*(one(i) for i in range(200))))

    codes = asyncio.run(poll_all())
    assert codes == [200] * 200, sorted(set(codes))
    s.client.post(f"/v1/jobs/{job['id']}/cancel", headers=s.headers)
