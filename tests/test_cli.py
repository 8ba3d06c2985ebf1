"""The SDK and the `svdq` command against a real stack over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg

from client.sdk import Client
from tests.stack import API_KEY, ROOT, Stack

SAMPLE = ROOT / "ops" / "samples" / "rocket.jpg"


def svdq(stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SVDQ_API_URL": stack.serve(), "SVDQ_API_KEY": API_KEY}
    return subprocess.run([sys.executable, "-m", "client.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def frames_of(path: Path) -> tuple[int, tuple[int, int]]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    return sum(1 for _ in gen), tuple(meta["size"])  # type: ignore[return-value]


def test_submit_wait_and_download_from_the_command_line(sqlite_stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    r = svdq(sqlite_stack, "submit", str(SAMPLE), "--num-inference-steps", "2", "--num-frames", "5",
             "--seed", "3", "--no-reuse", "--wait", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["params"]["seed"] == 3
    assert frames_of(out) == (5, (128, 64))
    r = svdq(sqlite_stack, "status", job["id"])
    assert r.returncode == 0 and job["id"] in r.stdout and "succeeded" in r.stdout


def test_refused_input_exits_2_and_names_the_field(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "submit", str(SAMPLE), "--width", "1000")
    assert r.returncode == 2
    assert "invalid_params" in r.stderr and "params.width" in r.stderr


def test_a_canceled_job_waits_to_exit_code_1(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "submit", str(SAMPLE), "--num-inference-steps", "50", "--no-reuse", "--json")
    job = json.loads(r.stdout)
    assert svdq(sqlite_stack, "cancel", job["id"]).returncode == 0
    r = svdq(sqlite_stack, "wait", job["id"], "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["status"] == "canceled"


def test_the_reports_first_study_on_the_sample_images_runs_from_its_spec(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "sweep", "ops/examples/exp1_samples.yaml", "--wait", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)
    assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 10
    assert sweep["axes"] == {"motion_bucket_id": [120, 180, 240, 300, 360]}
    assert [g["status"] for g in sweep["grids"]] == ["done", "done"]
    assert "gallery " in r.stderr and sweep["gallery_url"] in r.stderr


class DropFirstSubmit(httpx.BaseTransport):
    """Delivers the first POST /v1/jobs to the server, then drops the connection before the answer."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.dropped = inner, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/jobs" and not self.dropped:
            self.dropped += 1
            response.read()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


def test_a_retried_submit_after_a_dropped_connection_makes_one_job(sqlite_stack: Stack) -> None:
    transport = DropFirstSubmit(httpx.HTTPTransport())
    with Client(sqlite_stack.serve(), API_KEY, transport=transport) as c:
        image = c.upload_image(SAMPLE.read_bytes())
        job = c.submit(image_id=image["id"], num_inference_steps=1, num_frames=2, seed=99, reuse=False)
        assert transport.dropped == 1
        same: list[dict[str, Any]] = [j for j in c.list_jobs() if j["image_id"] == image["id"]
                                      and j["params"]["seed"] == 99]
        assert [j["id"] for j in same] == [job["id"]]
        done = c.wait(job["id"])
        assert done["status"] == "succeeded"
