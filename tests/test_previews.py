"""Live previews: latents projected to RGB without the VAE, throttled, published to the job's stream (only to
clients that ask for them) and kept as the job's latest preview; off per job with "preview": false."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ops.harness.stack import Stack
from worker.preview import SD_LATENT_RGB, LatentPreviewer, frame_indices, latents_to_rgb, preview_jpeg

SLOW = {"num_inference_steps": 30, "num_frames": 8}  # a few seconds on a CPU: several previews at 2 a second


def test_the_projection_is_comfyuis_sd_latent_map() -> None:
    lat = np.zeros((1, 4, 2, 2), np.float32)
    assert (latents_to_rgb(lat) == 128).all()  # (0 + 1) / 2 of 255, rounded
    lat[0, 0] = 1.0  # channel 0 alone: its row of factors, shifted and halved
    expected = np.round((SD_LATENT_RGB[0] + 1) / 2 * 255).astype(np.uint8)
    assert (latents_to_rgb(lat)[0, 0, 0] == expected).all()
    lat[0, 3] = 5.0  # far out of range: clamped, never wrapped
    assert latents_to_rgb(lat).min() == 0


def test_a_few_frames_side_by_side_the_same_from_torch_and_numpy() -> None:
    assert frame_indices(25) == [0, 12, 24] and frame_indices(2) == [0, 1] and frame_indices(14, 3) == [0, 6, 13]
    lat = torch.randn(1, 25, 4, 9, 16, generator=torch.Generator().manual_seed(0))
    from_torch, w, h = preview_jpeg(lat)
    from_numpy, w2, h2 = preview_jpeg(lat.numpy())
    assert (w, h) == (w2, h2) == (48, 9)
    a = np.asarray(Image.open(io.BytesIO(from_torch)), np.int16)
    b = np.asarray(Image.open(io.BytesIO(from_numpy)), np.int16)
    assert a.shape == (9, 48, 3) and np.abs(a - b).max() <= 2  # rounding apart, the same picture


def test_previews_are_throttled_and_never_raise() -> None:
    now = [0.0]
    sent: list[int] = []
    previewer = LatentPreviewer(lambda step, *_: sent.append(step), every_s=0.5, clock=lambda: now[0])
    lat = np.zeros((1, 3, 4, 2, 2), np.float32)
    for step in range(1, 12):  # a step every 0.25 s
        previewer(step, 11, lat)
        now[0] += 0.25
    assert sent == [1, 3, 5, 7, 9, 11]  # one every 0.5 s: at most 2 a second

    def broken(*_: Any) -> None:
        raise ConnectionError("redis is down")

    LatentPreviewer(broken)(1, 2, lat)  # logged, not raised


def stream(stack: Stack, job_id: str, query: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of the job's stream, to its end."""
    out: list[tuple[str, dict[str, Any]]] = []
    with stack.client.stream("GET", f"/v1/jobs/{job_id}/events{query}", headers=stack.headers, timeout=120) as r:
        assert r.status_code == 200
        name, data = "message", ""
        for line in r.iter_lines():
            if not line:
                if data:
                    out.append((name, json.loads(data)))
                name, data = "message", ""
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
    return out


def test_a_running_job_streams_changing_previews_to_a_client_that_asks(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    job = s.submit(s.upload()["id"], params=SLOW, reuse=False)
    events = stream(s, job["id"], "?preview=true")
    previews = [d for name, d in events if name == "preview"]
    assert events[-1][0] == "message" and events[-1][1]["status"] == "succeeded"
    assert len(previews) >= 2, [n for n, _ in events]
    steps = [p["step"] for p in previews]
    assert steps == sorted(steps) and all(1 <= st <= SLOW["num_inference_steps"] for st in steps)
    images = [base64.b64decode(p["image"]) for p in previews]
    assert len(set(images)) >= 2  # the picture changes as it denoises
    first = Image.open(io.BytesIO(images[0]))
    # three frames of the latent (an eighth of the 128x64 output) side by side
    assert first.format == "JPEG" and first.size == (previews[0]["width"], previews[0]["height"]) == (48, 8)
    r = s.client.get(f"/v1/jobs/{job['id']}/preview", headers=s.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert int(r.headers["x-preview-step"]) == steps[-1] and r.content == images[-1]
    from client.sdk import Client
    from ops.harness.stack import API_KEY

    with Client(s.serve(), API_KEY) as c:  # the SDK reads the same
        assert c.preview(job["id"]) == images[-1]


def test_a_client_that_does_not_ask_and_a_job_that_said_no_get_no_previews(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    job = s.submit(s.upload()["id"], params=SLOW, reuse=False)
    assert {name for name, _ in stream(s, job["id"])} == {"message"}  # old clients see job objects only
    off = s.submit(s.upload()["id"], params=SLOW, reuse=False, preview=False)
    assert off["preview"] is False
    assert {name for name, _ in stream(s, off["id"], "?preview=true")} == {"message"}
    r = s.client.get(f"/v1/jobs/{off['id']}/preview", headers=s.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_preview"
    assert "preview: false" in r.json()["error"]["message"]
    from client.sdk import Client
    from ops.harness.stack import API_KEY

    with Client(s.serve(), API_KEY) as c:
        assert c.preview(off["id"]) is None


@pytest.mark.parametrize("value", ["yes", 1])
def test_preview_must_be_a_boolean(sqlite_stack: Stack, value: Any) -> None:
    s = sqlite_stack
    r = s.client.post("/v1/jobs", headers=s.headers, json={"image_id": s.upload()["id"], "preview": value})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_params"
