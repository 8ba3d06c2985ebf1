"""The sync SDK against a real stack (API over HTTP, Redis, a tiny worker), and its retry policy against a
scripted transport."""

from __future__ import annotations

import email.utils
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import pytest

from client._http import RetryPolicy, retry_after_seconds
from client.sdk import Client, SvdqError
from client.types import Job
from ops.harness.images import sample_png
from ops.harness.proxy import TcpProxy
from ops.harness.stack import API_KEY, Stack


def unique_png() -> bytes:
    """An image no other test uploaded, so its jobs are only this test's."""
    return sample_png(color=tuple(os.urandom(3)))  # type: ignore[arg-type]


def decode(path: Path) -> tuple[int, tuple[int, int], float]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    return sum(1 for _ in gen), tuple(meta["size"]), float(meta["fps"])  # type: ignore[return-value]


def jobs_of_image(stack: Stack, image_id: str) -> list[dict[str, Any]]:
    """Straight from the API in-process, not through the SDK under test."""
    items = stack.client.get("/v1/jobs", params={"limit": 200}, headers=stack.headers).json()["items"]
    return [j for j in items if j["image_id"] == image_id]


def assert_progress_rises_to_the_end(seen: list[Job], steps: int) -> None:
    running = [j.progress.step for j in seen if j.status == "running"]
    assert len(seen) >= 3 and len(set(running)) >= 2, [(j.status, j.progress) for j in seen]
    assert running == sorted(running)
    assert [j.status for j in seen[-1:]] == ["succeeded"]
    assert seen[-1].progress.step == steps and seen[-1].progress.fraction == 1.0


class DropFirstAnswer(TcpProxy):
    """Passes traffic through, except that the first request containing `marker` reaches the server and
    then the connection is cut as the answer starts: the client cannot know whether it was done."""

    def __init__(self, target_port: int, marker: bytes) -> None:
        super().__init__(target_port)
        self.marker, self.armed, self.dropped = marker, set[int](), 0

    def _pipe(self, src: Any, dst: Any) -> None:  # type: ignore[override]
        try:
            while data := src.recv(65536):
                if id(src) in self.armed:  # the server's answer to the marked request
                    self.armed.discard(id(src))
                    self.dropped += 1
                    return
                if not self.dropped and not self.armed and self.marker in data:
                    self.armed.add(id(dst))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:  # shutdown first: close() alone waits for the other thread's recv to return
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass


def proxied(stack: Stack, marker: bytes) -> DropFirstAnswer:
    proxy = DropFirstAnswer(int(stack.serve().rsplit(":", 1)[1]), marker)
    proxy.restore()
    return proxy


def test_a_submitted_job_reports_rising_progress_and_downloads_a_video_that_decodes(
        sqlite_stack: Stack, tmp_path: Path) -> None:
    seen: list[Job] = []
    with Client(sqlite_stack.serve(), API_KEY) as c:
        # Given a job for 5 frames at 192x128 and 9 fps, 6 denoising steps
        job = c.submit(unique_png(), num_inference_steps=6, num_frames=5, width=192, height=128, fps=9, seed=5,
                       reuse=False)
        assert isinstance(job, Job) and job.status == "queued" and job.params["seed"] == 5
        # When it is followed to its end
        done = c.wait(job, on_progress=seen.append, timeout=180)
        path = c.download(done, tmp_path / "out" / "v.mp4")
    # Then progress rose step by step to the last one, and the video decodes to what was asked
    assert_progress_rises_to_the_end(seen, 6)
    assert done.result is not None and (done.result.frames, done.result.width, done.result.fps) == (5, 192, 9)
    assert decode(path) == (5, (192, 128), 9.0)


def test_wait_falls_back_to_polling_when_the_event_stream_is_unreachable(sqlite_stack: Stack) -> None:
    class NoEvents(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/events"):
                raise httpx.ConnectError("refused", request=request)
            return super().handle_request(request)

    seen: list[Job] = []
    with Client(sqlite_stack.serve(), API_KEY, transport=NoEvents()) as c:
        job = c.submit(unique_png(), num_inference_steps=3, num_frames=3, reuse=False)
        done = c.wait(job.id, on_progress=seen.append, poll_s=0.05, timeout=120)
    assert done.status == "succeeded"
    # polling repeats the same snapshot many times; the callback hears each change once
    keys = [(j.status, j.progress.stage, j.progress.step, j.queue_position) for j in seen]
    assert len(keys) == len(set(keys)) and seen[-1].status == "succeeded"


def test_wait_resumes_a_broken_event_stream_with_last_event_id(sqlite_stack: Stack) -> None:
    # Given an event stream that breaks off after its first event, the first time it is opened
    asked: list[str | None] = []

    class Breaks(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if not request.url.path.endswith("/events"):
                return response
            asked.append(request.headers.get("last-event-id"))
            if len(asked) > 1:
                return response
            upstream = response.stream

            class FirstEventOnly(httpx.SyncByteStream):
                def __iter__(self) -> Iterator[bytes]:
                    buf = b""
                    for chunk in upstream:
                        buf += chunk
                        if b"\n\n" in buf:
                            yield buf[:buf.index(b"\n\n") + 2]
                            raise httpx.ReadError("the connection dropped")

                def close(self) -> None:
                    upstream.close()  # type: ignore[attr-defined]

            return httpx.Response(response.status_code, headers=response.headers, stream=FirstEventOnly(),
                                  request=request)

    seen: list[Job] = []
    with Client(sqlite_stack.serve(), API_KEY, transport=Breaks()) as c:
        job = c.submit(unique_png(), num_inference_steps=3, num_frames=3, reuse=False)
        done = c.wait(job.id, on_progress=seen.append, timeout=120)
    # Then the client connected again, naming the last event it had, and followed the job to its end
    assert done.status == "succeeded" and seen[-1].status == "succeeded"
    assert asked[0] is None and len(asked) >= 2 and asked[1] and asked[1].count(".") == 3


def test_a_canceled_job_ends_canceled_and_has_no_video(sqlite_stack: Stack, tmp_path: Path) -> None:
    with Client(sqlite_stack.serve(), API_KEY) as c:
        job = c.submit(unique_png(), num_inference_steps=50, num_frames=4, reuse=False)
        c.cancel(job)
        done = c.wait(job, timeout=120)
        assert done.status == "canceled" and done.error is not None and done.error.code == "canceled"
        with pytest.raises(SvdqError) as exc:
            c.download(done, tmp_path / "none.mp4")
    assert exc.value.code == "job_not_finished" and not (tmp_path / "none.mp4").exists()


def test_a_retried_submit_after_a_dropped_connection_makes_one_job(sqlite_stack: Stack) -> None:
    # Given a connection that loses the answer to the first POST /v1/jobs after the server acted on it
    proxy = proxied(sqlite_stack, b"POST /v1/jobs HTTP")
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", API_KEY, retry=RetryPolicy(base_delay=0.05)) as c:
            image = c.upload_image(unique_png())
            # When the submit is retried by the SDK
            job = c.submit(image_id=image.id, num_inference_steps=1, num_frames=2, reuse=False)
    finally:
        proxy.cut()
    # Then the drop happened, and the server holds exactly the one job the SDK answered with
    assert proxy.dropped == 1
    assert [j["id"] for j in jobs_of_image(sqlite_stack, image.id)] == [job.id]


def test_list_jobs_follows_the_cursor_across_pages(sqlite_stack: Stack) -> None:
    with Client(sqlite_stack.serve(), API_KEY) as c:
        image = c.upload_image(unique_png())
        made = [c.submit(image_id=image.id, num_inference_steps=1, num_frames=2, seed=s, reuse=False).id
                for s in range(3)]
        first = c.jobs_page(limit=2)
        listed = [j.id for j in c.list_jobs(page_size=2) if j.image_id == image.id]
    assert len(first.items) == 2 and first.next_cursor
    assert listed == made[::-1]  # newest first, the third only on a later page


def test_a_rerun_is_a_new_job_with_the_same_seed_that_renders_again(sqlite_stack: Stack) -> None:
    with Client(sqlite_stack.serve(), API_KEY) as c:
        first = c.wait(c.submit(unique_png(), num_inference_steps=1, num_frames=2, reuse=False), timeout=180)
        again = c.rerun(first)
        done = c.wait(again, timeout=180)
    assert again.id != first.id and again.rerun_of == first.id
    assert done.status == "succeeded" and done.params["seed"] == first.params["seed"] and done.reused_from is None


def test_models_list_the_tiny_model_with_a_ready_worker(sqlite_stack: Stack) -> None:
    with Client(sqlite_stack.serve(), API_KEY) as c:
        tiny = {m.name: m for m in c.models()}["tiny"]
    assert tiny.workers_ready >= 1 and tiny.defaults["num_inference_steps"] > 0


# the retry policy, against a scripted server ------------------------------------------------------


def scripted(answers: list[httpx.Response]) -> tuple[httpx.MockTransport, list[tuple[float, httpx.Request]]]:
    seen: list[tuple[float, httpx.Request]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((time.monotonic(), request))
        return answers.pop(0)

    return httpx.MockTransport(handle), seen


JOB = {"id": "job_1", "status": "queued", "model": "tiny", "a_field_from_a_newer_server": [1]}


@pytest.mark.parametrize("status,code", [(429, "rate_limited"), (503, "queue_full")])
def test_a_busy_answer_is_retried_after_retry_after_with_the_same_idempotency_key(status: int, code: str) -> None:
    busy = httpx.Response(status, headers={"Retry-After": "1"}, json={"error": {"code": code, "message": "x"}})
    transport, seen = scripted([busy, httpx.Response(202, json=JOB)])
    with Client("http://svdq.test", "k", transport=transport, retry=RetryPolicy(base_delay=0.01)) as c:
        job = c.submit(image_id="img_1", seed=1)
    assert job.id == "job_1" and len(seen) == 2
    assert seen[1][0] - seen[0][0] >= 1.0  # waited as told, not the 0.01 s backoff
    keys = {r.headers["idempotency-key"] for _, r in seen}
    assert len(keys) == 1 and keys != {""}


def test_retries_give_up_with_the_servers_error_when_it_stays_busy() -> None:
    busy = [httpx.Response(429, headers={"Retry-After": "0"},
                           json={"error": {"code": "rate_limited", "message": "slow down"}}) for _ in range(3)]
    transport, seen = scripted(busy)
    with Client("http://svdq.test", "k", transport=transport, retries=2) as c, pytest.raises(SvdqError) as exc:
        c.get("job_1")
    assert (exc.value.status, exc.value.code, len(seen)) == (429, "rate_limited", 3)


def test_a_refusal_is_not_retried_and_keeps_its_field_details() -> None:
    refusal = httpx.Response(422, json={"error": {"code": "invalid_params", "message": "fix width",
                                                  "details": [{"field": "params.width", "message": "bad"}]}})
    transport, seen = scripted([refusal])
    with Client("http://svdq.test", "k", transport=transport) as c, pytest.raises(SvdqError) as exc:
        c.submit(image_id="img_1", width=1000)
    assert exc.value.code == "invalid_params" and exc.value.details[0]["field"] == "params.width"
    assert len(seen) == 1


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert retry_after_seconds("7") == 7.0
    assert 28 <= (retry_after_seconds(later) or 0) <= 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_typed_results_keep_fields_a_newer_server_adds() -> None:
    transport, _ = scripted([httpx.Response(200, json=JOB)])
    with Client("http://svdq.test", "k", transport=transport) as c:
        job = c.get("job_1")
    assert job.model_dump()["a_field_from_a_newer_server"] == [1] and not job.done


def test_a_cancel_whose_answer_was_lost_is_not_reported_as_a_failure() -> None:
    # Given a cancel that the server carried out but whose answer the client never got, so the retry meets 409
    finished = httpx.Response(409, json={"error": {"code": "job_finished", "message": "already canceled"}})
    transport, seen = scripted([finished, httpx.Response(200, json={**JOB, "status": "canceled"})])
    with Client("http://svdq.test", "k", transport=transport) as c:
        # Then cancel answers with the canceled job
        assert c.cancel("job_1").status == "canceled"
    assert [(r.method, r.url.path) for _, r in seen] == [("POST", "/v1/jobs/job_1/cancel"), ("GET", "/v1/jobs/job_1")]
    # but a job that finished some other way is still the 409 it was
    transport, _ = scripted([finished, httpx.Response(200, json={**JOB, "status": "succeeded"})])
    with Client("http://svdq.test", "k", transport=transport) as c, pytest.raises(SvdqError) as refused:
        c.cancel("job_1")
    assert refused.value.code == "job_finished" and refused.value.status == 409
