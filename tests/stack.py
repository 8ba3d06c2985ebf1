"""A whole svdq system for tests: migrated database, storage, the API in-process, and real
`svdq worker` processes rendering the tiny model."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_lib
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from models.migrate import upgrade
from models.presence import ready_workers
from models.settings import Settings
from models.storage import S3Store, open_store

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "svdq_test_key_0123456789abcdef"
TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    client: TestClient
    tmp: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    url: str | None = None
    server: Any = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def start_worker(self, model: str = "tiny", timeout: float = 180) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "client.cli", "worker", "--model", model],
                                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        r = redis_lib.Redis.from_url(self.settings.redis_url or "")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}: {self.worker_log(len(self.workers) - 1)}")
            if any(f"w{proc.pid}@" in w["name"] for w in ready_workers(r, model)):
                # the heartbeat comes just before Celery consumes; give it a moment to subscribe
                time.sleep(1.0)
                return proc
            time.sleep(0.2)
        raise RuntimeError("worker did not become ready")

    def serve(self) -> str:
        """The same app behind a real HTTP server (uvicorn in a thread), for the CLI and SDK; its URL."""
        if self.url is None:
            import threading

            import uvicorn

            from client.procs import free_port, wait_for_port

            port = free_port()
            server = uvicorn.Server(uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=port,
                                                   log_level="warning"))
            threading.Thread(target=server.run, daemon=True).start()
            assert wait_for_port(port, 20)
            self.server, self.url = server, f"http://127.0.0.1:{port}"
        return self.url

    def worker_log(self, i: int = 0) -> str:
        return (self.tmp / f"worker-{i}.log").read_text(errors="replace")

    def upload(self, image: bytes | None = None) -> dict[str, Any]:
        r = self.client.post("/v1/images", headers=self.headers,
                             files={"image": ("in.png", image or sample_png(), "image/png")})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def submit(self, image_id: str, **spec: Any) -> dict[str, Any]:
        r = self.client.post("/v1/jobs", headers=self.headers, json={"model": "tiny", "image_id": image_id, **spec})
        assert r.status_code == 202, r.text
        return dict(r.json())

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}", headers=self.headers).json()
            if job["status"] in TERMINAL:
                return dict(job)
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish: {job}\n{self.worker_log()}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def sample_png(width: int = 160, height: int = 96, color: tuple[int, int, int] = (200, 60, 30)) -> bytes:
    img = Image.new("RGB", (width, height), color)
    for x in range(0, width, 16):
        img.paste((20, 20, 200), (x, 0, x + 8, height))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def build_stack(tmp: Path, *, database_url: str, storage_url: str, redis_url: str, tiny_cache: Path,
                s3_endpoint: str | None = None, **extra: str) -> Stack:
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "SVDQ_DATABASE_URL": database_url, "SVDQ_STORAGE_URL": storage_url,
        "SVDQ_REDIS_URL": redis_url, "SVDQ_CACHE_DIR": str(tiny_cache), "SVDQ_BOOTSTRAP_API_KEY": API_KEY,
        "SVDQ_DEVICE": "cpu", "SVDQ_PROGRESS_INTERVAL_S": "0.05", "SVDQ_RATE_LIMIT_PER_S": "1000",
        "SVDQ_WORKER_METRICS_PORT": "0",  # many test workers at once: no exporter unless a test asks for one
        **extra,
    }
    if s3_endpoint:
        env.update({"SVDQ_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    env.pop("SVDQ_MODEL_TINY", None)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    settings = Settings(_env_file=None, **{k[5:].lower(): v for k, v in env.items()  # type: ignore[arg-type]
                                           if k.startswith("SVDQ_")})
    upgrade(database_url)
    store = open_store(settings)
    if isinstance(store, S3Store):
        store.ensure_bucket()
    client = TestClient(create_app(settings))
    client.__enter__()
    return Stack(env=env, settings=settings, client=client, tmp=tmp)
