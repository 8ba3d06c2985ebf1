"""A whole svdq system on loopback: one environment for every process (database, storage, Redis, the tiny
model's cache, the bootstrap key), the migrated database and its storage, real `svdq worker` processes (ready
once their heartbeat is in Redis), and the API either in this process (`build_stack`: a TestClient, and
uvicorn in a thread on demand, what the tests use) or as a `svdq api` subprocess with its own redis-server
(`start_stack`: what the chaos run and the lifecycle benchmark use)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as redis_lib

from client.procs import free_port, wait_for_port
from models.migrate import upgrade
from models.presence import ready_workers
from models.settings import Settings
from models.status import TERMINAL
from models.storage import S3Store, open_store
from ops.harness import ROOT
from ops.harness.images import sample_png
from ops.harness.processes import Proc, Processes
from ops.harness.services import RedisProcess

__all__ = ["API_KEY", "ROOT", "Stack", "build_stack", "stack_env", "start_stack"]

API_KEY = "svdq_test_key_0123456789abcdef"  # the tests' bootstrap key
# the tests' stack: fast progress, no rate limit in the way, and many workers at once, so no metrics exporter
# unless a test asks for one
TEST_ENV = {"SVDQ_PROGRESS_INTERVAL_S": "0.05", "SVDQ_RATE_LIMIT_PER_S": "1000", "SVDQ_WORKER_METRICS_PORT": "0"}


def stack_env(*, database_url: str, storage_url: str, redis_url: str, cache_dir: Path, api_key: str,
              s3_endpoint: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment plus the stack's settings, for the API and every worker; `extra` wins."""
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "SVDQ_DATABASE_URL": database_url, "SVDQ_STORAGE_URL": storage_url,
        "SVDQ_REDIS_URL": redis_url, "SVDQ_CACHE_DIR": str(cache_dir), "SVDQ_BOOTSTRAP_API_KEY": api_key,
        "SVDQ_DEVICE": "cpu", **extra,
    }
    if s3_endpoint:
        env.update({"SVDQ_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    env.pop("SVDQ_MODEL_TINY", None)  # the tiny model is built into the cache dir
    return env


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(_env_file=None, **{k[5:].lower(): v for k, v in env.items()  # type: ignore[arg-type]
                                       if k.startswith("SVDQ_")})


def prepare(settings: Settings) -> None:
    """The database migrated, the storage there (a local directory made, an S3 bucket created)."""
    upgrade(settings.database_url)
    store = open_store(settings)
    if isinstance(store, S3Store):
        store.ensure_bucket()


@dataclass
class Stack:
    env: dict[str, str]  # read at each worker start: a test may point the next worker elsewhere
    settings: Settings
    client: httpx.Client  # a TestClient on the in-process app, or an httpx.Client to the API subprocess
    tmp: Path
    procs: Processes  # the workers (and, for a subprocess API, the API and Redis), logging into tmp
    api_key: str = API_KEY
    workers: list[Proc] = field(default_factory=list)
    url: str | None = None  # where the API answers over HTTP (in-process: once serve() was called)
    server: Any = None  # serve()'s uvicorn server
    api: Proc | None = None  # the `svdq api` subprocess
    redis: RedisProcess | None = None  # the stack's own redis-server

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def redis_url(self) -> str:
        return self.settings.redis_url or ""

    def start_worker(self, model: str = "tiny", *, wait: bool = True, timeout: float = 180) -> Proc:
        """A `svdq worker --model <model>` logging to tmp/worker-<n>.log; with `wait`, once it is ready."""
        proc = self.procs.start(f"worker-{len(self.workers)}",
                                [sys.executable, "-m", "client.cli", "worker", "--model", model], self.env)
        self.workers.append(proc)
        if wait:
            self.wait_workers_ready([proc], model, timeout)
        return proc

    def wait_workers_ready(self, workers: list[Proc] | None = None, model: str = "tiny",
                           timeout: float = 180) -> None:
        """Until every one of `workers` (default: all started) has its heartbeat in Redis."""
        waiting = list(self.workers if workers is None else workers)
        r = redis_lib.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for w in waiting:
                    if w.poll() is not None:
                        raise RuntimeError(f"{w.name} exited with {w.returncode}: {w.tail()}")
                names = " ".join(str(x.get("name")) for x in ready_workers(r, model))
                if all(f"w{w.pid}@" in names for w in waiting):
                    time.sleep(1.0)  # the heartbeat comes just before Celery starts consuming
                    return
                time.sleep(0.2)
        finally:
            r.close()
        raise RuntimeError(f"the workers did not become ready in {timeout:.0f} s: "
                           + "; ".join(f"{w.name}: {w.tail(500)}" for w in waiting))

    def live_workers(self) -> list[Proc]:
        """Workers running and not asked to stop."""
        return [w for w in self.workers if w.alive() and w.stopping_since is None]

    def worker_log(self, i: int = 0) -> str:
        return (self.tmp / f"worker-{i}.log").read_text(errors="replace")

    def serve(self) -> str:
        """The API over real HTTP, for the CLI and SDK: the in-process app behind uvicorn in a thread (started
        on the first call); its URL."""
        if self.url is None:
            import threading

            import uvicorn

            from api.app import create_app

            port = free_port()
            server = uvicorn.Server(uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=port,
                                                   log_level="warning"))
            threading.Thread(target=server.run, daemon=True).start()
            if not wait_for_port(port, 20):
                raise RuntimeError("uvicorn did not start")
            self.server, self.url = server, f"http://127.0.0.1:{port}"
        return self.url

    def wait_api(self, timeout: float) -> None:
        """Until the API subprocess answers /readyz with 200."""
        assert self.api is not None and self.url is not None
        deadline = time.monotonic() + timeout
        while True:
            if not self.api.alive():
                raise RuntimeError(f"the API exited with {self.api.returncode}: {self.api.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not become ready: {self.api.tail()}")
            time.sleep(0.2)

    def upload(self, image: bytes | None = None, filename: str = "in.png") -> dict[str, Any]:
        r = self.client.post("/v1/images", headers=self.headers,
                             files={"image": (filename, image or sample_png(), "image/png")})
        return _answer(r, 201)

    def submit(self, image_id: str, **spec: Any) -> dict[str, Any]:
        """POST /v1/jobs for the tiny model (or spec's), expecting 202."""
        r = self.client.post("/v1/jobs", headers=self.headers, json={"model": "tiny", "image_id": image_id, **spec})
        return _answer(r, 202)

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        """The job once it ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}", headers=self.headers).json()
            if job["status"] in TERMINAL:
                return dict(job)
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish: {job}\n{self.worker_log()}")

    def stop(self) -> None:
        """Every process this stack started, stopped. An in-process TestClient stays for its caller to exit
        (exiting it runs the app's shutdown)."""
        if self.server is not None:
            self.server.should_exit = True
        self.procs.stop_all()
        if self.api is not None:
            self.client.close()


def _answer(r: httpx.Response, status: int) -> dict[str, Any]:
    if r.status_code != status:
        raise AssertionError(f"{r.request.method} {r.request.url.path} answered {r.status_code}: {r.text}")
    return dict(r.json())


def build_stack(tmp: Path, *, database_url: str, storage_url: str, redis_url: str, tiny_cache: Path,
                s3_endpoint: str | None = None, **extra: str) -> Stack:
    """The tests' stack: the API in this process (a TestClient, entered here; the caller exits it), workers
    started with start_worker(). `extra`: more SVDQ_* settings."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    env = stack_env(database_url=database_url, storage_url=storage_url, redis_url=redis_url, cache_dir=tiny_cache,
                    api_key=API_KEY, s3_endpoint=s3_endpoint, **{**TEST_ENV, **extra})
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})  # boto3 in this process too
    settings = settings_of(env)
    prepare(settings)
    client = TestClient(create_app(settings))
    client.__enter__()
    return Stack(env=env, settings=settings, client=client, tmp=tmp, procs=Processes(tmp))


def start_stack(tmp: Path, procs: Processes, *, database_url: str, cache_dir: Path, api_key: str,
                workers: int = 0, model: str = "tiny", api_timeout: float = 120, worker_timeout: float = 300,
                **extra: str) -> Stack:
    """The runs' stack, every part a subprocess under `procs` (the caller stops them, also when this raises):
    a redis-server of its own, the API (`svdq api` on a free port), storage in tmp/results, and `workers`
    workers of `model`; returned once the API and those workers are ready. `extra`: more settings."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed")
    redis = RedisProcess(procs)
    redis.start(timeout=15)
    env = stack_env(database_url=database_url, storage_url=f"file://{tmp / 'results'}", redis_url=f"{redis.url}/0",
                    cache_dir=cache_dir, api_key=api_key, **extra)
    settings = settings_of(env)
    prepare(settings)
    port = free_port()
    api = procs.start("api", [sys.executable, "-m", "client.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
                      env)
    url = f"http://127.0.0.1:{port}"
    stack = Stack(env=env, settings=settings, client=httpx.Client(base_url=url, timeout=30), tmp=tmp, procs=procs,
                  api_key=api_key, url=url, api=api, redis=redis)
    for _ in range(workers):  # they load their model while the API starts
        stack.start_worker(model, wait=False)
    stack.wait_api(api_timeout)
    if workers:
        stack.wait_workers_ready(model=model, timeout=worker_timeout)
    return stack
