"""Every process logs one JSON object per line, with the job_id on every line about a job; nothing secret
gets through even when an exception text quotes it."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from models.logs import JobIdFilter, JsonFormatter, job_context
from models.migrate import upgrade
from models.settings import Settings
from ops.harness import ROOT
from ops.harness.stack import API_KEY, Stack


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def captured_json() -> Iterator[io.StringIO]:
    """What the root logger writes through the JSON formatter during the test."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_workers_lines_are_json_and_each_line_about_a_job_carries_its_job_id(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    # When a job renders on a real worker process
    job_id = s.submit(s.upload()["id"], params={"num_inference_steps": 2, "num_frames": 2})["id"]
    assert s.wait(job_id)["status"] == "succeeded"

    # Then every line the workers wrote is one JSON object with the standard fields; Celery's only print,
    # its shutdown notice on SIGTERM, is the one exception (earlier tests may have stopped a worker)
    lines = [line for i in range(len(s.workers)) for line in s.worker_log(i).splitlines() if line.strip()]
    assert all(line.startswith("worker: ") and "shutdown" in line for line in lines if not line.startswith("{"))
    entries = json_lines("\n".join(line for line in lines if line.startswith("{")))
    assert entries
    for entry in entries:
        assert {"timestamp", "level", "logger", "message"} <= entry.keys()
    # and every line that names the job, Celery's own included, carries it as job_id
    mine = [e for e in entries if e.get("job_id") == job_id]
    naming = [e for e in entries if job_id in e["message"]]
    assert naming and all(e.get("job_id") == job_id for e in naming)
    messages = " | ".join(e["message"] for e in mine)
    assert "claimed" in messages and f"job {job_id} succeeded" in messages
    assert any(e["logger"].startswith("celery") and "succeeded in" in e["message"] for e in mine), messages
    # Celery's "received" line names the job through the message id, so it carries it too
    assert any(e["logger"].startswith("celery") and "received" in e["message"] for e in mine), messages
    # and lines outside any job carry none
    assert any("pipeline ready" in e["message"] and "job_id" not in e for e in entries)


def test_a_line_that_names_one_job_carries_it_and_one_naming_two_carries_none(captured_json: io.StringIO) -> None:
    one, other = "job_" + "a1" * 12, "job_" + "b2" * 12
    logging.getLogger("celery.worker.strategy").info("Task svdq.render[%s.0f3c] received", one)
    logging.getLogger("svdq.test").warning("%s and %s both", one, other)
    first, second = json_lines(captured_json.getvalue())
    assert first["job_id"] == one
    assert "job_id" not in second


def test_an_api_line_logged_during_a_request_for_a_job_carries_its_job_id(
        tmp_path: Path, captured_json: io.StringIO) -> None:
    # Given an API whose Redis is away, so the rate-limit check logs a warning inside each request
    db = f"sqlite:///{tmp_path}/svdq.db"
    upgrade(db)
    settings = Settings(_env_file=None, database_url=db, storage_url=f"file://{tmp_path}/results",  # type: ignore[call-arg]
                        redis_url="redis://127.0.0.1:1/0", bootstrap_api_key=API_KEY)
    with TestClient(create_app(settings)) as client:
        # When a request concerns a job, and another one does not
        r = client.get("/v1/jobs/job_0123456789abcdef01234567", headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 404
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200

    # Then the line from the job's request names it, the other line names none, and the key shows nowhere
    skipped = [e for e in json_lines(captured_json.getvalue()) if "rate limit check skipped" in e["message"]]
    assert [e.get("job_id") for e in skipped] == ["job_0123456789abcdef01234567", None]
    assert API_KEY not in captured_json.getvalue()


def test_a_job_id_passed_as_extra_wins_and_secrets_in_messages_are_redacted(captured_json: io.StringIO) -> None:
    log = logging.getLogger("svdq.test")
    url = "https://bucket.s3.amazonaws.com/jobs/j/video.mp4?X-Amz-Algorithm=AWS4&X-Amz-Signature=abcdef0123"
    with job_context("job_in_context"):
        log.info("uploaded to %s", url)
        log.warning("sent Authorization: Bearer %s", API_KEY, extra={"job_id": "job_explicit"})
        try:
            raise RuntimeError("webhook secret whsec_" + "A" * 32)
        except RuntimeError:
            log.exception("delivery failed")
    log.info("outside")
    text = captured_json.getvalue()
    entries = json_lines(text)
    assert [e.get("job_id") for e in entries] == ["job_in_context", "job_explicit", "job_in_context", None]
    assert entries[0]["message"] == "uploaded to https://bucket.s3.amazonaws.com/jobs/j/video.mp4?[redacted]"
    assert entries[2]["level"] == "ERROR" and "RuntimeError" in entries[2]["exception"]
    for secret in ("X-Amz-Signature", API_KEY, "A" * 32):
        assert secret not in text


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_process_logs_json_by_default_and_plain_text_when_asked(fmt: str) -> None:
    code = ("import logging, warnings; from models.logs import setup_logging; setup_logging(); "
            "logging.getLogger('svdq.x').info('hello'); warnings.warn('careful', stacklevel=1)")
    env = {**os.environ, "SVDQ_LOG_FORMAT": fmt} if fmt == "text" else \
        {k: v for k, v in os.environ.items() if k != "SVDQ_LOG_FORMAT"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 0 and len(lines) == 2, r.stderr
    if fmt == "json":
        first, warning = (json.loads(line) for line in lines)
        assert (first["logger"], first["level"], first["message"]) == ("svdq.x", "INFO", "hello")
        assert warning["logger"] == "py.warnings" and "careful" in warning["message"]
    else:
        assert lines[0].endswith("INFO svdq.x: hello")
