"""Job lifecycle against a real worker: live progress over SSE, cancel, idempotency, priorities,
reruns and result reuse."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ops.harness.images import sample_png
from ops.harness.stack import Stack

SLOW = {"num_inference_steps": 50, "num_frames": 14}  # several seconds on a CPU


def events(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    out = []
    with stack.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=stack.headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def wait_running(stack: Stack, job_id: str, min_step: int = 1, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stack.client.get(f"/v1/jobs/{job_id}", headers=stack.headers).json()
        if job["status"] == "running" and job["progress"]["step"] >= min_step:
            return dict(job)
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"{job_id} never got running")


def test_progress_events_arrive_in_order_and_end_with_the_terminal_status(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload()
    job = s.submit(image["id"], params={"num_inference_steps": 12, "num_frames": 6})
    # When we follow the job's event stream to its end
    seen = events(s, job["id"])
    # Then every event is a whole job object, progress never goes backwards, and the last one is terminal
    assert all(e["id"] == job["id"] for e in seen)
    steps = [e["progress"]["step"] for e in seen]
    assert steps == sorted(steps)
    assert len({st for st in steps if 0 < st < 12}) >= 3, steps  # live per-step progress, not just the ends
    assert seen[-1]["status"] == "succeeded" and seen[-1]["result"]["frames"] == 6
    assert [e["status"] for e in seen].count("succeeded") == 1
    # and a finished job's stream is its one final event
    assert [e["status"] for e in events(s, job["id"])] == ["succeeded"]


def test_a_running_job_canceled_mid_render_stops_within_a_step_and_stores_nothing(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload()
    job = s.submit(image["id"], params=SLOW)
    seen = wait_running(s, job["id"], min_step=2)
    # When it is canceled mid-render
    r = s.client.post(f"/v1/jobs/{job['id']}/cancel", headers=s.headers)
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    done = s.wait(job["id"])
    # Then it ends canceled, at the step after the one we saw (progress may lag the render by a step)
    assert done["status"] == "canceled" and done["error"]["code"] == "canceled"
    stopped_at = int(done["error"]["message"].split("at step ")[1].split(" ")[0])
    assert seen["progress"]["step"] <= stopped_at <= seen["progress"]["step"] + 3 < 50
    assert done["result"] is None
    # and nothing was uploaded for it
    assert not list((s.tmp / "results" / "jobs").glob(f"{job['id']}/*"))
    # and canceling again is a conflict, since it has ended
    r = s.client.post(f"/v1/jobs/{job['id']}/cancel", headers=s.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "job_finished")


def test_a_queued_job_cancels_at_once_and_the_worker_skips_it(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload()
    blocker = s.submit(image["id"], params=SLOW)
    wait_running(s, blocker["id"])
    queued = s.submit(image["id"], params={"num_inference_steps": 2, "num_frames": 4})
    r = s.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=s.headers)
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    s.client.post(f"/v1/jobs/{blocker['id']}/cancel", headers=s.headers)
    after = s.submit(image["id"], params={"num_inference_steps": 1, "num_frames": 2})
    assert s.wait(after["id"])["status"] == "succeeded"  # the worker got past the canceled job's message
    job = s.client.get(f"/v1/jobs/{queued['id']}", headers=s.headers).json()
    assert job["status"] == "canceled" and job["attempts"] == 0 and job["worker"] is None


def test_two_concurrent_posts_with_one_idempotency_key_create_one_job(stack: Stack) -> None:
    image = stack.upload()
    body = {"model": "tiny", "image_id": image["id"], "params": {"num_inference_steps": 1, "num_frames": 2}}
    headers = {**stack.headers, "Idempotency-Key": f"submit-{time.time_ns()}"}

    def post(_: int) -> Any:
        return stack.client.post("/v1/jobs", headers=headers, json=body)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1, [r.text for r in answers]
    assert sorted(r.status_code for r in answers) == [200] * 7 + [202]
    # the same key with another body is a conflict, and creates nothing
    other = {**body, "params": {"num_inference_steps": 2, "num_frames": 2}}
    r = stack.client.post("/v1/jobs", headers=headers, json=other)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "idempotency_conflict")
    stack.wait(ids.pop())


def test_a_failed_request_lets_its_idempotency_key_be_used_again(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    headers = {**s.headers, "Idempotency-Key": f"retry-{time.time_ns()}"}
    # Given a request that failed (unknown image) and so created nothing
    r = s.client.post("/v1/jobs", headers=headers, json={"model": "tiny", "image_id": "img_missing"})
    assert r.status_code == 404
    r = s.client.post("/v1/jobs", headers=headers, json={"model": "tiny", "image_id": "img_missing"})
    assert r.status_code == 404  # the same failing request fails the same way, not 409
    # When the corrected request is sent with the same key, Then it creates the job
    image = s.upload()
    good = {"model": "tiny", "image_id": image["id"], "params": {"num_inference_steps": 1, "num_frames": 2}}
    first = s.client.post("/v1/jobs", headers=headers, json=good)
    assert first.status_code == 202
    again = s.client.post("/v1/jobs", headers=headers, json=good)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    s.wait(first.json()["id"])


def test_a_higher_priority_job_submitted_later_runs_first(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload()
    blocker = s.submit(image["id"], params={"num_inference_steps": 30, "num_frames": 14})
    wait_running(s, blocker["id"])
    quick = {"num_inference_steps": 1, "num_frames": 2}
    low = s.submit(image["id"], params=quick, priority=1)
    high = s.submit(image["id"], params=quick, priority=9)
    # queue positions: the later, more urgent job is next
    assert high["queue_position"] == 0
    assert s.client.get(f"/v1/jobs/{low['id']}", headers=s.headers).json()["queue_position"] == 1
    done_low, done_high = s.wait(low["id"]), s.wait(high["id"])
    assert done_high["started_at"] < done_low["started_at"]
    s.wait(blocker["id"])


def test_a_rerun_reproduces_the_same_video_bytes_and_a_repeat_reuses_the_result(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload(sample_png(color=(90, 30, 160)))
    params = {"num_inference_steps": 3, "num_frames": 5, "seed": 1234}
    first = s.wait(s.submit(image["id"], params=params)["id"])
    # a rerun renders again (never reused) and gives the same bytes on the same CPU
    r = s.client.post(f"/v1/jobs/{first['id']}/rerun", headers=s.headers)
    assert r.status_code == 202 and r.json()["rerun_of"] == first["id"]
    rerun = s.wait(r.json()["id"])
    assert rerun["status"] == "succeeded" and rerun["reused_from"] is None
    assert rerun["result"]["sha256"] == first["result"]["sha256"]
    assert rerun["runtime"]["pipeline_instance"] == first["runtime"]["pipeline_instance"]
    # the same request again finishes at once from the stored result
    again = s.submit(image["id"], params=params)
    assert again["status"] == "succeeded" and again["reused_from"] in (first["id"], rerun["id"])
    assert again["result"]["sha256"] == first["result"]["sha256"]
    assert s.client.get(again["result"]["video_url"], headers=s.headers).status_code == 200
    # unless the request says reuse: false
    fresh = s.submit(image["id"], params=params, reuse=False)
    assert fresh["status"] == "queued"
    assert s.wait(fresh["id"])["reused_from"] is None


def test_events_for_an_unknown_job_are_404(sqlite_stack: Stack) -> None:
    r = sqlite_stack.client.get("/v1/jobs/job_nope/events", headers=sqlite_stack.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")


def raw_events(stack: Stack, job_id: str, last_event_id: str | None = None) -> tuple[int, list[dict[str, str]]]:
    """The stream's answer status and its events as field -> value (comments dropped)."""
    headers = {**stack.headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    out: list[dict[str, str]] = []
    with stack.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
        event: dict[str, str] = {}
        for line in r.iter_lines():
            if not line:
                if event:
                    out.append(event)
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value
        return r.status_code, out


def test_events_carry_ids_and_a_retry_and_a_resume_after_the_end_is_204(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    job = s.submit(s.upload()["id"], params={"num_inference_steps": 2, "num_frames": 2}, reuse=False)
    status, evs = raw_events(s, job["id"])
    assert status == 200 and evs[0]["retry"].isdigit()
    data = [e for e in evs if "data" in e]
    assert all(e["id"] for e in data) and len({e["id"] for e in data}) == len(data)  # one id per state
    last = json.loads(data[-1]["data"])
    assert last["status"] == "succeeded"
    # a client that saw the end and reconnects is told there is nothing more (an EventSource then stops)
    status, evs = raw_events(s, job["id"], last_event_id=data[-1]["id"])
    assert (status, evs) == (204, [])
    # one that saw an earlier state gets the job as it is now, the end
    status, evs = raw_events(s, job["id"], last_event_id=data[0]["id"])
    assert status == 200 and [json.loads(e["data"])["status"] for e in evs if "data" in e] == ["succeeded"]


def test_a_resumed_stream_waits_for_the_next_change_instead_of_repeating_the_last(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    job = s.submit(s.upload()["id"], model="svd")  # no worker here takes svd jobs: it stays queued
    _, first = raw_events_until_first(s, job["id"])
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(lambda: (time.sleep(0.5), s.client.post(f"/v1/jobs/{job['id']}/cancel",
                                                                     headers=s.headers)))
        status, evs = raw_events(s, job["id"], last_event_id=first["id"])
        assert later.result()[1].status_code == 200
    assert status == 200 and "retry" in evs[0] and "data" not in evs[0]
    assert [json.loads(e["data"])["status"] for e in evs if "data" in e] == ["canceled"]


def raw_events_until_first(stack: Stack, job_id: str) -> tuple[int, dict[str, str]]:
    """The first event of a stream that would run on (a queued job), then the stream is closed."""
    with stack.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=stack.headers) as r:
        event: dict[str, str] = {}
        for line in r.iter_lines():
            if not line and event:
                return r.status_code, event
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value
    raise AssertionError("the stream ended before its first event")


def test_a_stream_ends_after_sse_max_s_and_the_sdk_follows_the_job_across_reconnects(
        tmp_path: Path, redis_url: str, tiny_cache: Path) -> None:
    """No stream is held open for ever (SVDQ_SSE_MAX_S): it closes cleanly, and a client that reconnects with
    Last-Event-ID goes on from the state it had, to the job's end."""
    import httpx

    from client.sdk import Client
    from ops.harness.stack import API_KEY, build_stack

    s = build_stack(tmp_path, database_url=f"sqlite:///{tmp_path}/svdq.db", storage_url=f"file://{tmp_path}/r",
                    redis_url=f"{redis_url}/9", tiny_cache=tiny_cache, SVDQ_SSE_MAX_S="1")
    s.serve()  # the API only: no worker, so a job stays queued until it is canceled
    try:
        job = s.submit(s.upload()["id"], reuse=False)
        t0 = time.monotonic()
        status, evs = raw_events(s, job["id"])
        assert status == 200 and time.monotonic() - t0 < 5  # it ended by itself, the job still queued
        assert [json.loads(e["data"])["status"] for e in evs if "data" in e] == ["queued"]

        asked: list[str | None] = []

        class Count(httpx.HTTPTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if request.url.path.endswith("/events"):
                    asked.append(request.headers.get("last-event-id"))
                return super().handle_request(request)

        with ThreadPoolExecutor(1) as pool:
            # streams of 1 s with the retry of 2 s between them: three connections by then
            pool.submit(lambda: (time.sleep(8), s.client.post(f"/v1/jobs/{job['id']}/cancel", headers=s.headers)))
            with Client(s.url, API_KEY, transport=Count()) as c:
                done = c.wait(job["id"], timeout=60)
        assert done.status == "canceled"
        assert len(asked) >= 3 and asked[0] is None and all(asked[1:])  # each reconnect named the last event
    finally:
        s.stop()
        s.client.__exit__(None, None, None)
