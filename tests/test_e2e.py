"""One image in, one video out, through the whole system, on both profiles:
SQLite + local storage, and PostgreSQL + S3 (moto over HTTP) with presigned URLs."""

from __future__ import annotations

import hashlib
import io

import httpx
import imageio_ffmpeg
from PIL import Image

from ops.harness.stack import Stack


def decode(data: bytes, tmp_path, suffix: str = "mp4") -> tuple[int, tuple[int, int], float]:  # type: ignore[no-untyped-def]
    path = tmp_path / f"v.{suffix}"
    path.write_bytes(data)
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    return sum(1 for _ in gen), tuple(meta["size"]), float(meta["fps"])  # type: ignore[return-value]


def fetch(stack: Stack, url: str) -> httpx.Response:
    if url.startswith("http://testserver"):
        return stack.client.get(url, headers=stack.headers)
    return httpx.get(url, timeout=30)  # a presigned URL: no API key, real HTTP


def test_an_uploaded_image_becomes_a_video_with_the_requested_frames_size_and_fps(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given an uploaded image
    image = stack.upload()
    # When a job asks for 6 frames at 192x128 and 10 fps
    params = {"num_frames": 6, "width": 192, "height": 128, "fps": 10, "num_inference_steps": 3, "seed": 7}
    job = stack.submit(image["id"], params=params)
    assert job["status"] == "queued" and job["queue_position"] is not None
    done = stack.wait(job["id"])
    # Then it succeeds and every stored value is reported, seed included
    assert done["status"] == "succeeded", done
    assert done["params"]["seed"] == 7 and done["params"]["motion_bucket_id"] == 127
    assert done["progress"]["fraction"] == 1.0 and done["attempts"] == 1
    result = done["result"]
    assert (result["frames"], result["width"], result["height"], result["fps"]) == (6, 192, 128, 10)
    # And the video downloads (presigned on S3) and decodes to exactly that
    video = fetch(stack, result["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(video.content).hexdigest() == result["sha256"] and len(video.content) == result["bytes"]
    assert decode(video.content, tmp_path) == (6, (192, 128), 10.0)
    poster = fetch(stack, result["poster_url"])
    assert Image.open(io.BytesIO(poster.content)).size == (192, 128)
    # And the reproducibility record names what rendered it
    rt = done["runtime"]
    assert rt["model"] == "tiny" and rt["device"] == "cpu" and rt["dtype"] == "float32" and rt["seed"] == 7
    assert rt["revision"].startswith("dir-") and rt["torch"] and rt["diffusers"]


def test_a_second_job_on_the_same_worker_does_not_load_the_pipeline_again(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    image = stack.upload()
    first = stack.wait(stack.submit(image["id"], params={"num_inference_steps": 2, "num_frames": 4})["id"])
    second = stack.wait(stack.submit(image["id"], params={"num_inference_steps": 2, "num_frames": 4})["id"])
    assert first["status"] == second["status"] == "succeeded"
    # the same pipeline object rendered both, and it was loaded once, at worker start
    assert first["runtime"]["pipeline_instance"] == second["runtime"]["pipeline_instance"]
    assert first["runtime"]["worker"] == second["runtime"]["worker"]
    assert second["runtime"]["pipeline_loads"] == 1
    assert stack.worker_log().count("pipeline ready") == 1


def test_a_multipart_job_with_its_spec_renders(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ops.harness.images import sample_png

    r = stack.client.post("/v1/jobs", headers=stack.headers, files={"image": ("x.png", sample_png(), "image/png")},
                          data={"spec": '{"model": "tiny", "params": {"num_inference_steps": 2, "num_frames": 5}}'})
    assert r.status_code == 202, r.text
    done = stack.wait(r.json()["id"])
    assert done["status"] == "succeeded" and done["result"]["frames"] == 5


def test_every_output_format_decodes(sqlite_stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import zipfile

    stack = sqlite_stack
    image = stack.upload()
    params = {"num_inference_steps": 2, "num_frames": 5, "fps": 8}
    jobs = {fmt: stack.submit(image["id"], params=params, output={"format": fmt})["id"]
            for fmt in ("webm", "gif", "frames")}
    for fmt, job_id in jobs.items():
        done = stack.wait(job_id)
        assert done["status"] == "succeeded", done
        body = fetch(stack, done["result"]["video_url"])
        if fmt == "webm":
            assert body.headers["content-type"] == "video/webm"
            assert decode(body.content, tmp_path, "webm") == (5, (128, 64), 8.0)
        elif fmt == "gif":
            gif = Image.open(io.BytesIO(body.content))
            assert gif.n_frames == 5 and gif.size == (128, 64)
        else:
            names = zipfile.ZipFile(io.BytesIO(body.content)).namelist()
            assert names == [f"frame_{i:04d}.png" for i in range(5)]
