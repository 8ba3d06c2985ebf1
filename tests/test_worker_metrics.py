"""A worker's own exporter (`svdq worker --metrics-port`): renders, failures by code, step time, busy, peak GPU
memory and model load time, scraped from a real worker process before, during and after its renders."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from client.procs import free_port
from models.storage import LocalStore, image_key, open_store
from ops.harness.services import RedisProcess
from ops.harness.stack import Stack, build_stack
from tests.test_metrics import Samples, delta, parse, value, wait_status
from worker.metrics import MetricsExporter, WorkerMetrics


@pytest.fixture(scope="module")
def exporter_stack(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Iterator[tuple[Stack, int]]:
    redis = RedisProcess()
    redis.start()
    port = free_port()
    tmp = tmp_path_factory.mktemp("exporter-stack")
    stack = build_stack(tmp, database_url=f"sqlite:///{tmp}/svdq.db", storage_url=f"file://{tmp}/results",
                        redis_url=redis.url + "/0", tiny_cache=tiny_cache, SVDQ_WORKER_METRICS_PORT=str(port))
    stack.start_worker()
    yield stack, port
    stack.stop()
    stack.client.__exit__(None, None, None)
    redis.kill()


def scrape_port(port: int) -> Samples:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200
    return parse(r.text)


def test_a_workers_exporter_counts_its_renders_failures_and_steps_and_shows_when_it_is_busy(
        exporter_stack: tuple[Stack, int]) -> None:
    s, port = exporter_stack
    tiny = {"model": "tiny"}
    before = scrape_port(port)
    assert value(before, "svdq_worker_model_load_seconds", **tiny) > 0
    assert value(before, "svdq_worker_busy", **tiny) == 0

    # When one job renders 8 steps (watched while it runs) and another fails because its image is gone
    image = s.upload()["id"]
    ok = s.submit(image, params={"num_inference_steps": 8, "num_frames": 6})["id"]
    wait_status(s, ok, "running")
    during = scrape_port(port)
    assert s.wait(ok)["status"] == "succeeded"
    missing = s.upload()["id"]
    store = open_store(s.settings)
    assert isinstance(store, LocalStore)
    store.local_path(image_key(missing)).unlink()
    failed = s.wait(s.submit(missing, params={"num_inference_steps": 2, "num_frames": 2})["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "image_missing"
    after = scrape_port(port)

    # Then the worker was busy during the render and idle after; both renders and the failure's code counted
    assert value(during, "svdq_worker_busy", **tiny) == 1
    assert value(after, "svdq_worker_busy", **tiny) == 0
    assert delta(after, before, "svdq_worker_renders_total", **tiny) == 2
    assert delta(after, before, "svdq_worker_failures_total", code="image_missing", **tiny) == 1
    # steps 2..8 are timed (step 1 holds the image encoding); the failed job never reached a step
    assert delta(after, before, "svdq_worker_step_seconds_count", **tiny) == 7
    assert 0 < delta(after, before, "svdq_worker_step_seconds_sum", **tiny) < 60
    assert value(after, "svdq_worker_peak_gpu_memory_bytes", **tiny) == 0  # a CPU worker


def test_port_zero_turns_the_exporter_off_and_a_taken_port_leaves_the_worker_running(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = WorkerMetrics("tiny")
    metrics.load_seconds.labels("tiny").set(1.5)
    off = MetricsExporter(metrics, 0)
    off.start()
    assert not off.serving

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        clash = MetricsExporter(WorkerMetrics("tiny"), port, host="127.0.0.1")
        clash.start()
        assert not clash.serving
    assert "not started on port" in caplog.text

    ctx_port = free_port()
    exporter = MetricsExporter(metrics, ctx_port)
    exporter.start()
    assert exporter.serving
    deadline = time.monotonic() + 10
    while True:
        try:
            samples = scrape_port(ctx_port)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert value(samples, "svdq_worker_model_load_seconds", model="tiny") == 1.5
    assert value(samples, "svdq_worker_renders_total", model="tiny") == 0
    exporter.stop()


@pytest.mark.parametrize(("env", "host", "bound"), [("dev", None, "127.0.0.1"), ("prod", None, "0.0.0.0"),
                                                    ("dev", "0.0.0.0", "0.0.0.0"), ("prod", "127.0.0.1", "127.0.0.1")])
def test_the_exporter_binds_loopback_in_dev_and_every_interface_in_prod(env: str, host: str | None, bound: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from models.settings import Settings
    from worker.process import worker_services

    for name in [n for n in os.environ if n.startswith(("SVDQ_", "AWS_"))]:  # other tests' placeholder secrets
        monkeypatch.delenv(name)

    settings = Settings(_env_file=None, env=env, worker_metrics_host=host, bootstrap_api_key="svdq_x" * 6,
                        redis_url="redis://127.0.0.1:1/0")
    assert settings.metrics_bind_host() == bound

    # what worker_services reads of a loaded worker, without loading a pipeline
    ctx = SimpleNamespace(settings=settings, metrics=WorkerMetrics("tiny"), sessions=None, store=None, signals=None,
                          spec=SimpleNamespace(name="tiny"), name="tiny-w1", presence=lambda: {})
    exporter = next(s for s in worker_services(ctx, metrics_port=free_port())  # type: ignore[arg-type]
                    if isinstance(s, MetricsExporter))
    exporter.start()
    try:
        assert exporter.serving and exporter.server.server_address[0] == bound
    finally:
        exporter.stop()
