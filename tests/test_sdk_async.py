"""The AsyncClient against the same real stack and scripted server as the sync SDK."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from client._http import RetryPolicy
from client.async_sdk import AsyncClient
from client.sdk import SvdqError
from client.types import Job
from ops.harness.stack import API_KEY, Stack
from tests.test_sdk import JOB, assert_progress_rises_to_the_end, decode, jobs_of_image, proxied, unique_png


def test_an_async_submit_streams_progress_and_downloads_a_video_that_decodes(
        sqlite_stack: Stack, tmp_path: Path) -> None:
    seen: list[Job] = []

    async def scenario() -> tuple[Job, Path]:
        async with AsyncClient(sqlite_stack.serve(), API_KEY) as c:
            job = await c.submit(unique_png(), num_inference_steps=5, num_frames=4, width=128, height=128, fps=6,
                                 reuse=False)
            done = await c.wait(job, on_progress=seen.append, timeout=180)
            return done, await c.download(done, tmp_path / "v.mp4")

    done, path = asyncio.run(scenario())
    assert_progress_rises_to_the_end(seen, 5)
    assert done.status == "succeeded" and decode(path) == (4, (128, 128), 6.0)


def test_an_async_cancel_ends_the_job_canceled(sqlite_stack: Stack) -> None:
    async def scenario() -> Job:
        async with AsyncClient(sqlite_stack.serve(), API_KEY) as c:
            job = await c.submit(unique_png(), num_inference_steps=50, num_frames=4, reuse=False)
            await c.cancel(job.id)
            return await c.wait(job.id, timeout=120)

    done = asyncio.run(scenario())
    assert done.status == "canceled" and done.error is not None and done.error.code == "canceled"


def test_an_async_submit_retried_after_a_dropped_connection_makes_one_job(sqlite_stack: Stack) -> None:
    proxy = proxied(sqlite_stack, b"POST /v1/jobs HTTP")

    async def scenario() -> tuple[str, str]:
        async with AsyncClient(f"http://127.0.0.1:{proxy.port}", API_KEY, retry=RetryPolicy(base_delay=0.05)) as c:
            image = await c.upload_image(unique_png())
            job = await c.submit(image_id=image.id, num_inference_steps=1, num_frames=2, reuse=False)
            return image.id, job.id

    try:
        image_id, job_id = asyncio.run(scenario())
    finally:
        proxy.cut()
    assert proxy.dropped == 1
    assert [j["id"] for j in jobs_of_image(sqlite_stack, image_id)] == [job_id]


def test_async_list_jobs_follows_the_cursor(sqlite_stack: Stack) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        async with AsyncClient(sqlite_stack.serve(), API_KEY) as c:
            image = await c.upload_image(unique_png())
            made = [(await c.submit(image_id=image.id, num_inference_steps=1, num_frames=2, seed=s)).id
                    for s in range(3)]
            return made, [j.id async for j in c.list_jobs(page_size=1) if j.image_id == image.id]

    made, listed = asyncio.run(scenario())
    assert listed == made[::-1]


def test_an_async_busy_answer_is_retried_after_retry_after() -> None:
    seen: list[tuple[float, httpx.Request]] = []
    answers = [httpx.Response(503, headers={"Retry-After": "1"},
                              json={"error": {"code": "queue_full", "message": "full"}}),
               httpx.Response(202, json=JOB)]

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((time.monotonic(), request))
        return answers.pop(0)

    async def scenario() -> Job:
        async with AsyncClient("http://svdq.test", "k", transport=httpx.MockTransport(handle),
                               retry=RetryPolicy(base_delay=0.01)) as c:
            return await c.rerun("job_0")

    assert asyncio.run(scenario()).id == "job_1"
    assert seen[1][0] - seen[0][0] >= 1.0
    assert seen[0][1].headers["idempotency-key"] == seen[1][1].headers["idempotency-key"]


def test_an_async_refusal_raises_with_its_code() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "No job 'x'."}})

    async def scenario() -> Job:
        async with AsyncClient("http://svdq.test", "k", transport=httpx.MockTransport(handle)) as c:
            return await c.get("x")

    with pytest.raises(SvdqError) as exc:
        asyncio.run(scenario())
    assert (exc.value.status, exc.value.code) == (404, "not_found")
