"""`svdq flower` against a real broker and worker: behind basic auth, it lists the worker by model and device
and the render task by job id and model; outside dev it will not start without real credentials."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.procs import free_port, wait_for_port
from ops.harness import ROOT
from ops.harness.stack import Stack
from worker.context import worker_name

USER, PASSWORD = "ops", "flower-" + secrets.token_hex(8)


@pytest.fixture
def flower(sqlite_stack: Stack) -> Iterator[str]:
    """`svdq flower` as a production operator runs it, on the stack's broker; its URL."""
    port = free_port()
    env = {**sqlite_stack.env, "SVDQ_ENV": "prod", "SVDQ_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    env.pop("AWS_SECRET_ACCESS_KEY", None)  # see below
    log_path = sqlite_stack.tmp / f"flower-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "client.cli", "flower", "--port", str(port)], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_for_port(port, 60):
            raise RuntimeError(f"Flower did not listen (exit {proc.poll()}): {log_path.read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert PASSWORD not in log_path.read_text()


def poll(fetch: Any, found: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        hit = found(last)
        if hit:
            return hit
        time.sleep(0.5)
    raise AssertionError(f"not found in Flower within {timeout}s: {last}")


def test_flower_needs_its_credentials_and_then_shows_the_worker_and_the_render_by_job_and_model(
        sqlite_stack: Stack, flower: str) -> None:
    s = sqlite_stack
    # Given Flower behind basic auth: nothing without the credentials, or with a wrong password
    assert httpx.get(f"{flower}/api/workers").status_code == 401
    assert httpx.get(f"{flower}/api/tasks", auth=(USER, "wrong-password-12")).status_code == 401
    assert httpx.get(f"{flower}/workers").status_code == 401

    def workers() -> dict[str, Any]:
        r = httpx.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=(USER, PASSWORD), timeout=30)
        assert r.status_code == 200, r.text
        return dict(r.json())

    # the running worker shows up named by its model and device
    live = [p for p in s.workers if p.poll() is None]
    names = {worker_name("tiny", "cpu", None, p.pid, socket.gethostname()) for p in live}
    poll(workers, lambda ws: names <= set(ws))

    # When a render is submitted through the API and finishes
    image = s.upload()
    job = s.submit(image["id"], params={"num_inference_steps": 1, "num_frames": 2})
    done = s.wait(job["id"])
    assert done["status"] == "succeeded"

    # Then Flower has the task, found by the job id, with the model and the worker the job row names
    def tasks() -> dict[str, Any]:
        r = httpx.get(f"{flower}/api/tasks", params={"search": job["id"]}, auth=(USER, PASSWORD), timeout=30)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def finished_render(ts: dict[str, Any]) -> dict[str, Any] | None:
        return next((t for t in ts.values() if t.get("state") == "SUCCESS"), None)

    task = poll(tasks, finished_render)
    assert task["name"] == "svdq.render"
    assert task["args"] == f"job={job['id']} model=tiny"
    assert task["worker"] == done["worker"] and done["worker"] in names


def test_a_worker_started_after_flower_is_listed_without_a_refresh_within_10_s(sqlite_stack: Stack,
                                                                               flower: str) -> None:
    s = sqlite_stack

    def workers() -> dict[str, Any]:  # as a dashboard or a script reads it: no ?refresh=1
        r = httpx.get(f"{flower}/api/workers", auth=(USER, PASSWORD), timeout=10)
        assert r.status_code == 200, r.text
        return dict(r.json())

    # Given Flower, which inspected the fleet as it started
    before = {worker_name("tiny", "cpu", None, p.pid, socket.gethostname()) for p in s.live_workers()}
    poll(workers, lambda ws: before <= set(ws), timeout=30)
    # When a worker starts after it (and is ready: its pipeline loaded, consuming)
    late = s.start_worker()
    try:
        name = worker_name("tiny", "cpu", None, late.pid, socket.gethostname())
        assert name not in before
        # Then Flower lists it within 10 s, from the worker's own events, with what inspect says of it
        listed = poll(workers, lambda ws: ws.get(name) if {"stats", "active_queues"} <= set(ws.get(name) or {})
                      else None, timeout=10)
        assert listed["stats"]["pid"] == late.pid
        assert {q["name"] for q in listed["active_queues"]} >= {"render.tiny"}
    finally:
        s.procs.stop(late)


@pytest.mark.parametrize(("auth", "says"), [
    (None, "set SVDQ_FLOWER_BASIC_AUTH=user:password"),
    ("admin:changeme", "placeholder or shorter than 12 characters"),
    ("admin:Xy9q", "placeholder or shorter than 12 characters"),
    ("no-colon-here", "must be user:password"),
])
def test_flower_outside_dev_refuses_to_start_without_real_credentials_and_says_what_to_set(
        auth: str | None, says: str) -> None:
    env = {**os.environ, "SVDQ_ENV": "prod", "SVDQ_REDIS_URL": "redis://127.0.0.1:1/0",
           "SVDQ_BOOTSTRAP_API_KEY": "svdq_" + "k" * 40}
    env.pop("SVDQ_FLOWER_BASIC_AUTH", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)  # the S3 test stacks set a placeholder one, which prod refuses first
    if auth is not None:
        env["SVDQ_FLOWER_BASIC_AUTH"] = auth
    r = subprocess.run([sys.executable, "-m", "client.cli", "flower", "--port", str(free_port())], env=env,
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert says in r.stderr and "SVDQ_FLOWER_BASIC_AUTH" in r.stderr
    # a sentence, not a traceback, and never the secret itself
    password = (auth or "").partition(":")[2]
    assert "Traceback" not in r.stderr and (not password or password not in r.stderr)


def test_a_worker_pinned_to_a_gpu_is_named_by_model_gpu_and_pid() -> None:
    assert worker_name("svd-xt", "cuda", "1", 4242, "box") == "svd-xt-gpu1-w4242@box"
    assert worker_name("tiny", "cuda:0", None, 7, "box") == "tiny-cuda0-w7@box"


def test_celery_inspect_reaches_the_running_fleet_through_an_importable_app(sqlite_stack: Stack) -> None:
    # Given the tests' stack with its tiny worker, and only the settings an operator's shell has
    env = {**os.environ, "SVDQ_REDIS_URL": sqlite_stack.redis_url}
    celery_cli = Path(sys.executable).with_name("celery")
    # When an operator asks Celery's own command line who is there
    r = subprocess.run([str(celery_cli), "-A", "models.celery_app", "inspect", "ping", "--timeout", "10", "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    # Then every worker answers
    assert r.returncode == 0, r.stdout + r.stderr
    answers = json.loads(r.stdout)
    assert answers and all(a == {"ok": "pong"} for a in answers.values())
    assert any(name.startswith("tiny-") for name in answers), answers
