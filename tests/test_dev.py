"""`svdq dev`: the whole system on embedded defaults, as a newcomer starts it, on a port of their choosing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from client.procs import free_port
from ops.harness import ROOT
from ops.harness.images import sample_png
from ops.harness.webhooks import WebhookReceiver


@pytest.mark.timeout(240)
def test_svdq_dev_on_another_port_names_that_port_in_webhook_payloads(tmp_path: Path, tiny_cache: Path) -> None:
    # Given `svdq dev --port P` with nothing but a database file, a results directory and the tiny model
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVDQ_")}
    env.update({"HF_HUB_OFFLINE": "1", "SVDQ_DATABASE_URL": f"sqlite:///{tmp_path}/dev.db",
                "SVDQ_STORAGE_URL": f"file://{tmp_path}/results", "SVDQ_CACHE_DIR": str(tiny_cache),
                "SVDQ_DEVICE": "cpu", "SVDQ_ALLOW_PRIVATE_URLS": "true", "SVDQ_WORKER_METRICS_PORT": "0"})
    receiver = WebhookReceiver()
    dev = subprocess.Popen([sys.executable, "-m", "client.cli", "dev", "--port", str(port)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert dev.stdout is not None
        key = None
        for line in dev.stdout:
            if m := re.search(r"API key (\S+)", line):
                key = m.group(1)
                break
        assert key, "svdq dev printed no API key"
        base = f"http://127.0.0.1:{port}"
        h = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=h, timeout=30) as c:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # the worker loads its model
                try:
                    models = c.get("/v1/models").json()
                    if any(m["name"] == "tiny" and m.get("workers_ready") for m in models):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            image = c.post("/v1/images", files={"image": ("a.png", sample_png())}).json()["id"]
            # When a job with a webhook succeeds
            job = c.post("/v1/jobs", json={"model": "tiny", "image_id": image, "webhook_url": receiver.url,
                                           "params": {"num_inference_steps": 1, "num_frames": 2}}).json()
            payload = httpx.Response(200, content=receiver.wait_for(1, timeout=120)[0]["body"]).json()["data"]
            got = c.get(f"/v1/jobs/{job['id']}").json()
        # Then the payload's result URLs are the ones a GET answers: on the port svdq dev serves
        assert payload["status"] == got["status"] == "succeeded"
        assert payload["result"]["video_url"] == got["result"]["video_url"] == f"{base}/v1/jobs/{job['id']}/video"
        assert payload["result"]["poster_url"] == got["result"]["poster_url"]
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
        receiver.server.shutdown()
