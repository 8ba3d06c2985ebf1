"""A job's video measurements end to end: the worker measures the decoded frames of every render and stores them
in the result (never failing the render when measuring fails), GET /v1/jobs/{id} answers them with their units,
the SDK's typed Job parses them and the OpenAPI document declares them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.types import Job as SdkJob
from models.db import session_scope
from models.tables import Job
from ops.harness.stack import Stack
from tests.test_worker_render import load, make_job, tiny_worker_context
from worker import produce
from worker.context import WorkerContext
from worker.render import run_render

UNITS = {"motion": "px/frame", "frame_difference": "levels/frame", "flicker": "levels",
         "first_frame_similarity": "SSIM"}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Iterator[WorkerContext]:
    yield from tiny_worker_context(tmp_path_factory.mktemp("metrics-worker"), tiny_cache,
                                   "svdq_worker_metrics_key_1")


def test_a_render_stores_the_metrics_of_its_decoded_frames_with_units(ctx: WorkerContext) -> None:
    # Given a job of 4 frames at 7 fps, interpolated to 14 fps after denoising
    job_id = make_job(ctx, seed=5, fps=7)
    with session_scope(ctx.sessions) as s:
        row = s.get(Job, job_id)
        assert row is not None
        row.postprocess = {"interpolate": {"fps": 14, "method": "blend"}}
    # When it renders
    assert run_render(ctx, job_id).label == "succeeded"
    job = load(ctx, job_id)
    assert job.result is not None and job.runtime is not None
    metrics = job.result["metrics"]
    # Then its result has all four measurements, each a number with its unit
    assert {k: v["unit"] for k, v in metrics.items() if k != "measured_on"} == UNITS
    assert all(isinstance(metrics[k]["value"], float) for k in UNITS)
    assert metrics["motion"]["value"] >= 0 and metrics["frame_difference"]["value"] > 0  # the tiny model's noise
    assert -1 <= metrics["first_frame_similarity"]["value"] <= 1
    # measured on the model's own 4 frames at its output size, not the 8 the interpolation made
    assert job.result["frames"] == 8
    assert metrics["measured_on"] == {"frames": 4, "width": job.params["width"], "height": job.params["height"]}
    # And the time it took, and how long the job waited for it after uploading, are in the runtime record
    timings = job.runtime["timings"]
    assert timings["measure_s"] > 0 and 0 <= timings["measure_wait_s"] <= timings["measure_s"] + 0.01


def test_a_measuring_failure_is_logged_and_the_render_still_succeeds(ctx: WorkerContext, monkeypatch,  # type: ignore[no-untyped-def]
                                                                     caplog) -> None:
    # Given measuring that fails
    def broken(*a: object, **k: object) -> None:
        raise FloatingPointError("measuring broke")

    monkeypatch.setattr(produce, "measure", broken)
    job_id = make_job(ctx, seed=6)
    # When the job renders
    with caplog.at_level(logging.WARNING, logger="svdq.worker"):
        assert run_render(ctx, job_id).label == "succeeded"
    # Then it succeeded with its video and no metrics, and the log says why
    job = load(ctx, job_id)
    assert job.status == "succeeded" and job.result is not None and ctx.store.exists(job.result["video_key"])
    assert job.result["metrics"] is None
    assert any("measuring its video failed" in r.getMessage() and "measuring broke" in r.getMessage()
               for r in caplog.records)


def test_get_job_answers_the_metrics_and_the_sdk_and_openapi_type_them(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    # Given a tiny job rendered through the whole stack
    image = stack.upload()
    job = stack.submit(image["id"], params={"num_inference_steps": 2, "num_frames": 5, "seed": 21})
    done = stack.wait(job["id"])
    assert done["status"] == "succeeded", done
    # When it is read back
    body = stack.client.get(f"/v1/jobs/{job['id']}", headers=stack.headers).json()
    metrics = body["result"]["metrics"]
    # Then the four measurements are there with their units, measured on its 5 frames
    assert {k: metrics[k]["unit"] for k in UNITS} == UNITS
    assert metrics["measured_on"] == {"frames": 5, "width": body["result"]["width"],
                                      "height": body["result"]["height"]}
    # And the SDK's typed job carries them as typed fields
    typed = SdkJob.model_validate(body)
    assert typed.result is not None and typed.result.metrics is not None
    assert typed.result.metrics.motion.unit == "px/frame"
    assert typed.result.metrics.flicker.value == metrics["flicker"]["value"]
    # And the OpenAPI document declares them: JobResult.metrics is VideoMetrics, each a Measurement
    schemas = stack.client.get("/openapi.json").json()["components"]["schemas"]
    declared = schemas["JobResult"]["properties"]["metrics"]
    assert {"$ref": "#/components/schemas/VideoMetrics"} in declared["anyOf"]
    video = schemas["VideoMetrics"]
    assert set(UNITS) <= set(video["required"])
    assert all(video["properties"][k]["$ref"] == "#/components/schemas/Measurement" for k in UNITS)
    assert "px/frame" in video["properties"]["motion"]["description"]
    assert schemas["Measurement"]["required"] == ["value", "unit"]
