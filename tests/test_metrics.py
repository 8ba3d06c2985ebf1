"""The API's GET /metrics against a real stack (API + worker + a private Redis, tiny model): the queued and
running gauges and the finished-job counters, queue depth, the worker-fed job-time histograms and request
latency move as jobs do; an outage of its sources drops families, never the scrape."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from models.settings import Settings
from ops.harness.services import RedisProcess
from ops.harness.stack import API_KEY, Stack, build_stack

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")  # no Authorization header: Prometheus scrapes without a key
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def wait_status(stack: Stack, job_id: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.client.get(f"/v1/jobs/{job_id}", headers=stack.headers).json()["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {status}:\n{stack.worker_log()}")


@pytest.fixture(scope="module")
def metrics_stack(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Iterator[Stack]:
    redis = RedisProcess()  # a Redis of its own: queue depth and the histograms see only this test's jobs
    redis.start()
    tmp = tmp_path_factory.mktemp("metrics-stack")
    stack = build_stack(tmp, database_url=f"sqlite:///{tmp}/svdq.db", storage_url=f"file://{tmp}/results",
                        redis_url=redis.url + "/0", tiny_cache=tiny_cache, SVDQ_WORKER_METRICS_PORT="0")
    stack.start_worker()
    yield stack
    stack.stop()
    stack.client.__exit__(None, None, None)
    redis.kill()


def test_metrics_move_as_jobs_succeed_and_are_canceled_while_running_and_while_queued(metrics_stack: Stack) -> None:
    s = metrics_stack
    ended, tiny, queue = "svdq_jobs_finished_total", {"model": "tiny"}, {"queue": "render.tiny"}
    before = scrape(s.client)
    assert value(before, "svdq_workers_ready", **tiny) == 1
    assert value(before, "svdq_queue_depth", **queue) == 0
    assert "/metrics" not in s.client.get("/openapi.json").json()["paths"]

    # Given a long render holding the only worker, and two more jobs waiting behind it
    image = s.upload()["id"]
    slow = s.submit(image, params={"num_inference_steps": 50, "num_frames": 14})["id"]
    wait_status(s, slow, "running")
    quick = s.submit(image, params={"num_inference_steps": 2, "num_frames": 2})["id"]
    doomed = s.submit(image, params={"num_inference_steps": 2, "num_frames": 2})["id"]

    # Then the scrape sees one running, two queued, and both messages in the model's Redis queue
    during = scrape(s.client)
    assert delta(during, before, "svdq_jobs_running", **tiny) == 1
    assert delta(during, before, "svdq_jobs_queued", **tiny) == 2
    assert value(during, "svdq_queue_depth", **queue) == 2

    # When the queued one and the running one are canceled and the quick one succeeds
    canceled_queued = s.client.post(f"/v1/jobs/{doomed}/cancel", headers=s.headers)
    canceled_running = s.client.post(f"/v1/jobs/{slow}/cancel", headers=s.headers)
    assert (canceled_queued.status_code, canceled_running.status_code) == (200, 202)
    assert s.wait(slow)["status"] == "canceled"
    assert s.wait(quick)["status"] == "succeeded"
    assert s.wait(doomed)["status"] == "canceled"
    deadline = time.monotonic() + 30  # the worker still takes the canceled job's message off the queue
    while value(after := scrape(s.client), "svdq_queue_depth", **queue) and time.monotonic() < deadline:
        time.sleep(0.1)

    # Then the job series, the queue and the histograms moved exactly as the jobs did
    assert value(after, "svdq_queue_depth", **queue) == 0
    assert delta(after, before, ended, status="succeeded", **tiny) == 1
    assert delta(after, before, ended, status="canceled", **tiny) == 2
    assert delta(after, before, ended, status="failed", **tiny) == 0
    assert delta(after, before, "svdq_jobs_queued", **tiny) == 0
    assert delta(after, before, "svdq_jobs_running", **tiny) == 0
    # two jobs started and ended on the worker; the one canceled in the queue never started
    for hist in ("svdq_job_queue_wait_seconds", "svdq_job_render_seconds"):
        assert delta(after, before, hist + "_count", **tiny) == 2
        assert delta(after, before, hist + "_bucket", le="+Inf", **tiny) == 2
        assert delta(after, before, hist + "_sum", **tiny) > 0
    # the waits the histogram adds up are the two started jobs' own, submit to start, as their objects say
    waited = 0.0
    for job_id in (slow, quick):
        job = s.client.get(f"/v1/jobs/{job_id}", headers=s.headers).json()
        started, created = (datetime.fromisoformat(job[k]) for k in ("started_at", "created_at"))
        waited += (started - created).total_seconds()
    assert delta(after, before, "svdq_job_queue_wait_seconds_sum", **tiny) == pytest.approx(waited, abs=0.02)
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                     if k[0] == "svdq_job_render_seconds_bucket" and dict(k[1]).get("model") == "tiny")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative

    http = "svdq_http_request_duration_seconds_count"
    assert delta(after, before, http, method="POST", route="/v1/jobs", status="202") == 3
    assert delta(after, before, http, method="POST", route="/v1/jobs/{job_id}/cancel", status="200") == 1
    assert delta(after, before, http, method="POST", route="/v1/jobs/{job_id}/cancel", status="202") == 1
    assert delta(after, before, http, method="GET", route="/v1/jobs/{job_id}", status="200") >= 3
    assert delta(after, before, http, method="GET", route="/metrics", status="200") >= 2
    s.client.get("/no/such/page")
    assert value(scrape(s.client), http, method="GET", route="unmatched", status="404") >= 1


def test_a_scrape_with_redis_down_and_no_jobs_table_answers_with_what_it_can(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given an API whose Redis stops and whose database was never migrated
    redis = RedisProcess()
    redis.start()
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/empty.db",  # type: ignore[call-arg]
                        storage_url=f"file://{tmp_path}/results", redis_url=redis.url + "/0")
    caplog.set_level(logging.WARNING, logger="svdq.api.metrics")
    with TestClient(create_app(settings)) as client:
        redis.kill()
        assert client.get("/healthz").status_code == 200
        # When Prometheus scrapes twice
        first, second = scrape(client), scrape(client)

    # Then both scrapes are 200 with request latency, without the families whose source is down
    for samples in (first, second):
        names = {name for name, _ in samples}
        assert "svdq_http_request_duration_seconds_count" in names
        assert not names & {"svdq_jobs_finished_total", "svdq_jobs_queued", "svdq_queue_depth", "svdq_workers_ready",
                            "svdq_job_render_seconds_count"}
    assert value(second, "svdq_http_request_duration_seconds_count", method="GET", route="/metrics",
                 status="200") == 1
    # and each outage is logged once, not once per scrape
    warnings = [r.getMessage() for r in caplog.records if r.name == "svdq.api.metrics"]
    assert len([w for w in warnings if "jobs left out" in w]) == 1
    assert len([w for w in warnings if "queue_depth left out" in w]) == 1
    assert API_KEY not in caplog.text

