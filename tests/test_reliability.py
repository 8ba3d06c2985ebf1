"""Whatever dies, no job is lost and none is run twice: real worker processes killed mid-render, Redis
restarted empty, SIGTERM during a render, a poison job, a message delivered twice, a database outage."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.harness.databases import postgres_database
from ops.harness.proxy import TcpProxy
from ops.harness.services import RedisProcess
from ops.harness.stack import Stack, build_stack

SLOW = {"num_inference_steps": 50, "num_frames": 14}
FAST_UPKEEP = {"SVDQ_LEASE_S": "2", "SVDQ_MAINTENANCE_INTERVAL_S": "0.5", "SVDQ_RECONCILE_AFTER_S": "1",
               "SVDQ_SHUTDOWN_GRACE_S": "1", "SVDQ_MAX_ATTEMPTS": "3"}


@pytest.fixture(scope="module")
def redis_proc() -> Iterator[RedisProcess]:
    r = RedisProcess()
    r.start()
    yield r
    r.kill()


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, redis_proc: RedisProcess, tiny_cache: Path) -> Iterator[Stack]:
    """PostgreSQL (its own database) + local storage + two tiny workers with short leases."""
    tmp = tmp_path_factory.mktemp("chaos")
    with postgres_database() as db:
        stack = build_stack(tmp, database_url=db, storage_url=f"file://{tmp}/results", redis_url=redis_proc.url + "/0",
                            tiny_cache=tiny_cache, **FAST_UPKEEP)
        stack.start_worker()
        stack.start_worker()
        yield stack
        stack.stop()
        stack.client.__exit__(None, None, None)
        stack.client.app.state.svdq.engine.dispose()  # type: ignore[attr-defined]


def holder(stack: Stack, job: dict[str, Any]) -> subprocess.Popen[bytes]:
    return next(p for p in stack.workers if f"w{p.pid}@" in (job["worker"] or ""))


def live_workers(stack: Stack) -> list[subprocess.Popen[bytes]]:
    return [p for p in stack.workers if p.poll() is None]


def ensure_workers(stack: Stack, n: int = 2) -> None:
    while len(live_workers(stack)) < n:
        stack.start_worker()


def running(stack: Stack, job_id: str, *, not_on: set[int] | None = None, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stack.client.get(f"/v1/jobs/{job_id}", headers=stack.headers).json()
        if job["status"] == "running" and job["progress"]["step"] >= 1:
            if not not_on or not any(f"w{pid}@" in job["worker"] for pid in not_on):
                return dict(job)
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"{job_id} never got running: {job}")


def result_objects(stack: Stack, job_id: str) -> list[str]:
    return sorted(p.name for p in (stack.tmp / "results" / "jobs" / job_id).glob("*") if not p.name.startswith("."))


def test_a_worker_sigkilled_mid_render_has_its_job_finished_by_another(chaos: Stack) -> None:
    ensure_workers(chaos)
    image = chaos.upload()
    job = chaos.submit(image["id"], params=SLOW)
    seen = running(chaos, job["id"])
    victim = holder(chaos, seen)
    # When the worker rendering it is SIGKILLed
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    done = chaos.wait(job["id"], timeout=180)
    # Then another worker finishes it, once, after the lease ran out
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2 and f"w{victim.pid}@" not in done["worker"]
    assert result_objects(chaos, job["id"]) == ["poster.jpg", "video.mp4"]


def test_redis_restarted_empty_loses_no_queued_job(chaos: Stack, redis_proc: RedisProcess) -> None:
    ensure_workers(chaos)
    image = chaos.upload()
    blockers = [chaos.submit(image["id"], params={"num_inference_steps": 25, "num_frames": 14}) for _ in range(2)]
    for b in blockers:
        running(chaos, b["id"])
    queued = [chaos.submit(image["id"], params={"num_inference_steps": 2, "num_frames": 4}) for _ in range(4)]
    # When Redis dies and comes back with nothing in it
    redis_proc.kill()
    redis_proc.start()
    # Then every job still ends, each exactly once
    for job in [*blockers, *queued]:
        done = chaos.wait(job["id"], timeout=180)
        assert done["status"] == "succeeded", done
    for job in queued:
        assert result_objects(chaos, job["id"]) == ["poster.jpg", "video.mp4"]


def test_sigterm_during_a_render_hands_the_job_back_after_the_grace_period(chaos: Stack) -> None:
    ensure_workers(chaos)
    image = chaos.upload()
    job = chaos.submit(image["id"], params=SLOW)
    victim = holder(chaos, running(chaos, job["id"]))
    # When the worker is asked to stop (grace period 1 s, the render needs several)
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(60) == 0  # it stops cleanly
    done = chaos.wait(job["id"], timeout=180)
    # Then the job ran again elsewhere and succeeded
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert f"w{victim.pid}@" not in done["worker"]


def test_a_poison_job_ends_worker_lost_after_the_max_attempts(chaos: Stack) -> None:
    ensure_workers(chaos)
    image = chaos.upload()
    job = chaos.submit(image["id"], params=SLOW)
    killed: set[int] = set()
    # Given a job that takes down every worker that renders it (here: we kill each one)
    for _ in range(3):
        victim = holder(chaos, running(chaos, job["id"], not_on=killed, timeout=180))
        killed.add(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        ensure_workers(chaos)
    done = chaos.wait(job["id"], timeout=120)
    # Then it fails worker_lost with a message that says why, and is not tried a fourth time
    assert done["status"] == "failed" and done["error"]["code"] == "worker_lost", done
    assert "3 attempts" in done["error"]["message"] and done["attempts"] == 3


def test_a_message_delivered_twice_renders_once(chaos: Stack) -> None:
    from models.queue import make_enqueue

    ensure_workers(chaos)
    image = chaos.upload()
    job = chaos.submit(image["id"], params={"num_inference_steps": 8, "num_frames": 6})
    # Given the job's message sent a second time
    make_enqueue(chaos.client.app.state.svdq.celery)(job["id"], "tiny", 5, 0.0)  # type: ignore[attr-defined]
    done = chaos.wait(job["id"])
    # When both copies have reached a worker (the second one is turned away: the job is no longer queued)
    turned_away = re.compile(rf"job {job['id']} is \w+; not rendering it")
    deadline = time.monotonic() + 60
    while not turned_away.search(logs := "".join(chaos.worker_log(i) for i in range(len(chaos.workers)))):
        assert time.monotonic() < deadline, f"the second message never reached a worker:\n{logs[-3000:]}"
        time.sleep(0.2)
    # Then it was claimed and rendered once
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert logs.count(f"job {job['id']} claimed") == 1
    assert result_objects(chaos, job["id"]) == ["poster.jpg", "video.mp4"]


def test_the_api_answers_503_fast_while_its_database_is_down_and_recovers(tmp_path: Path, redis_url: str) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.settings import Settings
    from ops.harness.stack import API_KEY

    proxy = TcpProxy(5432)
    proxy.restore()
    with postgres_database() as db:
        via_proxy = db.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        from models.migrate import upgrade

        upgrade(via_proxy)
        settings = Settings(_env_file=None, database_url=via_proxy, redis_url=redis_url + "/5",
                            storage_url=f"file://{tmp_path}/r", bootstrap_api_key=API_KEY)
        h = {"Authorization": f"Bearer {API_KEY}"}
        with TestClient(create_app(settings)) as c:
            assert c.get("/v1/jobs", headers=h).status_code == 200
            # When the database goes away
            proxy.cut()
            for path in ("/v1/jobs", "/readyz"):
                t0 = time.monotonic()
                r = c.get(path, headers=h)
                # Then requests are answered 503 within about a second, not left hanging
                assert time.monotonic() - t0 < 2.5
                assert r.status_code == 503
            r = c.get("/v1/jobs", headers=h)
            assert r.json()["error"]["code"] == "database_unavailable" and r.headers["retry-after"]
            # And when it is back, the API recovers by itself
            proxy.restore()
            assert c.get("/v1/jobs", headers=h).status_code == 200
            c.app.state.svdq.engine.dispose()  # type: ignore[attr-defined]
    proxy.cut()


def test_a_message_taken_while_the_workers_database_is_down_goes_back_and_renders_once_it_returns(
        tmp_path: Path, tiny_cache: Path) -> None:
    # Given a worker that reaches PostgreSQL through a proxy, and an API that reaches it directly
    redis = RedisProcess()
    redis.start()
    proxy = TcpProxy(5432)
    proxy.restore()
    try:
        with postgres_database() as db:
            stack = build_stack(tmp_path, database_url=db, storage_url=f"file://{tmp_path}/results",
                                redis_url=redis.url + "/0", tiny_cache=tiny_cache, SVDQ_DB_RETRY_S="1",
                                SVDQ_MAINTENANCE_INTERVAL_S="3600")
            stack.env["SVDQ_DATABASE_URL"] = db.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            try:
                stack.start_worker()
                # When the worker's database goes away and a job arrives
                proxy.cut()
                job = stack.submit(stack.upload()["id"], params={"num_inference_steps": 2, "num_frames": 2})
                deadline = time.monotonic() + 30
                while "back on the queue" not in stack.worker_log() and time.monotonic() < deadline:
                    time.sleep(0.2)
                # Then the worker cannot claim it and puts the message back rather than acknowledging it
                assert "back on the queue" in stack.worker_log(), stack.worker_log()
                assert stack.client.get(f"/v1/jobs/{job['id']}", headers=stack.headers).json()["status"] == "queued"
                # and once the database is back, the same message renders it, once
                proxy.restore()
                done = stack.wait(job["id"], timeout=90)
                assert done["status"] == "succeeded" and done["attempts"] == 1, done
                assert stack.worker_log().count(f"job {job['id']} claimed") == 1
            finally:
                stack.stop()
                stack.client.__exit__(None, None, None)
                stack.client.app.state.svdq.engine.dispose()  # type: ignore[attr-defined]
    finally:
        proxy.cut()
        redis.kill()
