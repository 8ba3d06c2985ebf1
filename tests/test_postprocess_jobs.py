"""Post-processing as stages of a job, against a real worker with the tiny model."""

from __future__ import annotations

from typing import Any

import pytest

from ops.harness.stack import Stack
from tests.test_e2e import decode, fetch

BASE = {"num_frames": 6, "fps": 7, "num_inference_steps": 2}


@pytest.mark.parametrize("method", ["blend", "motion"])
def test_a_6_frame_7_fps_job_interpolated_to_21_fps_has_18_frames(sqlite_stack: Stack, tmp_path,  # type: ignore[no-untyped-def]
                                                                   method: str) -> None:
    s = sqlite_stack
    image = s.upload()
    job = s.submit(image["id"], params=BASE, postprocess={"interpolate": {"fps": 21, "method": method}})
    done = s.wait(job["id"])
    assert done["status"] == "succeeded", done
    assert (done["result"]["frames"], done["result"]["fps"]) == (18, 21)
    video = fetch(s, done["result"]["video_url"])
    assert decode(video.content, tmp_path) == (18, (128, 64), 21.0)
    assert done["runtime"]["postprocess"][0]["method"] == method


def test_a_2x_lanczos_upscale_doubles_width_and_height(sqlite_stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = sqlite_stack
    image = s.upload()
    job = s.submit(image["id"], params=BASE, postprocess={"upscale": {"factor": 2, "method": "lanczos"}})
    done = s.wait(job["id"])
    assert (done["result"]["width"], done["result"]["height"], done["result"]["frames"]) == (256, 128, 6)
    assert decode(fetch(s, done["result"]["video_url"]).content, tmp_path) == (6, (256, 128), 7.0)


@pytest.mark.parametrize(("post", "field"), [
    ({"interpolate": {"fps": 7, "method": "blend"}}, "postprocess.interpolate.fps"),
    ({"interpolate": {"fps": 500, "method": "blend"}}, "postprocess.interpolate.fps"),
    ({"interpolate": {"fps": 24, "method": "warp"}}, "postprocess.interpolate.method"),
    ({"upscale": {"factor": 3, "method": "lanczos"}}, "postprocess.upscale.factor"),
    ({"upscale": {"factor": 2, "method": "learned"}}, "postprocess.upscale.method"),  # no weights configured
    ({"sharpen": {}}, "postprocess.sharpen"),
])
def test_bad_postprocess_values_are_422_with_field_details(sqlite_stack: Stack, post: dict[str, Any],
                                                           field: str) -> None:
    s = sqlite_stack
    image = s.upload()
    r = s.client.post("/v1/jobs", headers=s.headers, json={"model": "tiny", "image_id": image["id"], "params": BASE,
                                                           "postprocess": post})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_params" and field in [d["field"] for d in err["details"]], err


def test_models_list_the_postprocess_methods_workers_can_run(sqlite_stack: Stack) -> None:
    models = sqlite_stack.client.get("/v1/models", headers=sqlite_stack.headers).json()
    tiny = next(m for m in models if m["name"] == "tiny")
    assert tiny["postprocess"] == {"interpolate": ["blend", "motion"], "upscale": ["lanczos"]}
