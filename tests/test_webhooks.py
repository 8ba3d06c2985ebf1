"""Webhooks: Standard Webhooks signatures, URL rules at submission and delivery, and at-least-once delivery
with one stable id per event, against a real worker and a local receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from models.db import create_db_engine, create_session_factory
from models.keys import new_key_string, store_key
from models.migrate import upgrade
from models.netcheck import UrlRejected, check_url
from models.tables import WebhookDelivery, utcnow
from models.webhooks import sign
from ops.harness.stack import Stack
from ops.harness.webhooks import WebhookReceiver as Receiver
from worker.webhook_sender import WebhookSender


def test_signatures_match_the_standard_webhooks_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost/hook", "http://10.1.2.3/x", "http://192.168.0.1/x",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://[::ffff:127.0.0.1]/x",
    "http://0.0.0.0/x", "http://2130706433/x", "http://0177.0.0.1/x", "ftp://example.com/x",
    "http://user:pw@example.com/x", "http://224.0.0.1/x",
])
def test_urls_to_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(UrlRejected):
        check_url(url, resolve=lambda host, port: _fake_dns(host))


def _fake_dns(host: str) -> list[str]:
    import socket

    if host == "example.com":
        return ["93.184.216.34"]
    return sorted({str(i[4][0]) for i in socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)})


def test_a_name_that_resolves_to_a_private_address_is_refused_and_a_public_one_passes() -> None:
    with pytest.raises(UrlRejected, match="not a public address"):
        check_url("https://hooks.example.org/x", resolve=lambda h, p: ["10.0.0.7"])
    assert check_url("https://hooks.example.org/x", resolve=lambda h, p: ["93.184.216.34"]) == ["93.184.216.34"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def verify(secret: str, req: dict[str, Any]) -> dict[str, Any]:
    """The delivery's event, checked as a receiver checks it: the standardwebhooks library (signature and a
    timestamp within its tolerance), not our own code."""
    return dict(Webhook(secret).verify(req["body"], req["headers"]))


def secret_of(stack: Stack) -> str:
    return str(stack.client.get("/v1/keys/self", headers=stack.headers).json()["webhook_secret"])


def test_a_finished_job_is_posted_once_signed_with_the_keys_secret(sqlite_stack: Stack, receiver: Receiver) -> None:
    s = sqlite_stack
    image = s.upload()
    job = s.submit(image["id"], params={"num_inference_steps": 1, "num_frames": 2}, webhook_url=receiver.url)
    assert s.wait(job["id"])["status"] == "succeeded"
    reqs = receiver.wait_for(1)
    time.sleep(1.5)  # nothing more arrives
    assert len(reqs) == 1
    event = verify(secret_of(s), reqs[0])
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job["id"]
    assert event["data"]["result"]["frames"] == 2


def test_a_delivery_is_logged_with_its_job_id_and_without_the_urls_token(sqlite_stack: Stack,
                                                                        receiver: Receiver) -> None:
    s = sqlite_stack
    job = s.submit(s.upload()["id"], params={"num_inference_steps": 1, "num_frames": 2},
                   webhook_url=receiver.url + "?token=receiver_secret_token_42")
    assert s.wait(job["id"])["status"] == "succeeded" and len(receiver.wait_for(1)) == 1
    deadline, lines = time.monotonic() + 10, []
    while not lines and time.monotonic() < deadline:
        logs = "".join(s.worker_log(i) for i in range(len(s.workers)))
        lines = [json.loads(line) for line in logs.splitlines()
                 if line.startswith("{") and "webhook" in line and job["id"] in line]
        time.sleep(0.2)
    assert lines and all(entry.get("job_id") == job["id"] for entry in lines), lines
    assert "receiver_secret_token_42" not in logs


def test_a_failing_endpoint_is_retried_with_the_same_webhook_id(sqlite_stack: Stack) -> None:
    receiver = Receiver(fail=2)
    s = sqlite_stack
    image = s.upload()
    job = s.submit(image["id"], params={"num_inference_steps": 1, "num_frames": 2}, webhook_url=receiver.url)
    s.wait(job["id"])
    reqs = receiver.wait_for(3)
    assert len(reqs) == 3
    assert len({r["headers"]["webhook-id"] for r in reqs}) == 1
    verify(secret_of(s), reqs[-1])
    # the delivery log shows the one event, delivered on its third attempt, under that same id
    deadline = time.monotonic() + 10
    while True:
        log = s.client.get(f"/v1/jobs/{job['id']}/webhooks", headers=s.headers).json()["items"]
        if (log and log[0]["status"] == "delivered") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(d["event"], d["status"], d["attempts"]) for d in log] == [("job.succeeded", "delivered", 3)]
    assert log[0]["id"] == reqs[0]["headers"]["webhook-id"] and log[0]["last_error"] is None
    receiver.server.shutdown()


def test_a_sweep_webhook_fires_once_when_the_last_cell_ends(sqlite_stack: Stack, receiver: Receiver) -> None:
    s = sqlite_stack
    image = s.upload()
    body = {"model": "tiny", "images": [{"image_id": image["id"]}], "webhook_url": receiver.url,
            "params": {"num_inference_steps": 1, "num_frames": 2, "seed": 8}, "axes": {"fps": [6, 8, 10]}}
    sweep = s.client.post("/v1/sweeps", headers=s.headers, json=body).json()
    reqs = receiver.wait_for(1, timeout=120)
    time.sleep(1.5)
    assert len(reqs) == 1
    event = verify(secret_of(s), reqs[0])
    assert event["type"] == "sweep.succeeded" and event["data"]["id"] == sweep["id"]
    assert event["data"]["counts"]["succeeded"] == 3


def test_webhook_urls_to_private_addresses_are_refused_at_submission(tmp_path: Path, redis_url: str) -> None:
    from tests.test_service import app_with

    with app_with(tmp_path, redis_url) as c:
        h = {"Authorization": "Bearer svdq_test_key_0123456789abcdef"}
        image = c.post("/v1/images", headers=h, files={"image": ("a.png", _png())}).json()
        r = c.post("/v1/jobs", headers=h, json={"model": "tiny", "image_id": image["id"],
                                                "webhook_url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "webhook_url"


def _png() -> bytes:
    from ops.harness.images import sample_png

    return sample_png()


def test_a_delivery_goes_to_the_address_it_checked_and_a_rebound_name_is_refused(tmp_path: Path,
                                                                                   receiver: Receiver) -> None:
    # Given a webhook whose name is resolved only by the sender's resolver: the first answer is the address the
    # receiver listens on (taken as public here), every later one a private address (a DNS rebinding)
    db = f"sqlite:///{tmp_path}/hooks.db"
    upgrade(db)
    engine = create_db_engine(db)
    sessions = create_session_factory(engine)
    with sessions() as s:
        key = store_key(s, new_key_string(), name="hooks")
        for i in (1, 2):
            s.add(WebhookDelivery(id=f"wh_{i}", owner_id=key.id, resource_id=f"job_{i}", event="job.succeeded",
                                  url=f"http://hooks.rebind.test:{receiver.port}/hook", next_attempt_at=utcnow()))
        s.commit()
    answers = [["127.0.0.1"], ["10.0.0.9"]]
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    sender = WebhookSender(sessions=sessions, payload=lambda _s, d: {"id": d.resource_id}, allow_private=False,
                           resolve=resolve, public=lambda addr: addr == "127.0.0.1")
    try:
        # When the sender delivers both
        sender.run_once()
    finally:
        sender.http.close()
    # Then the first went to the address its check answered (one lookup, the name as the Host header)
    assert len(receiver.requests) == 1 and receiver.requests[0]["headers"]["host"] == \
        f"hooks.rebind.test:{receiver.port}"
    with sessions() as s:
        first, second = s.get(WebhookDelivery, "wh_1"), s.get(WebhookDelivery, "wh_2")
        assert first is not None and second is not None
        assert first.status == "delivered"
        # and the second, whose name now answered a private address, was refused without a connection
        assert second.status == "failed" and "10.0.0.9, which is not a public address" in (second.last_error or "")
    assert asked == ["hooks.rebind.test", "hooks.rebind.test"]  # one lookup per delivery
    engine.dispose()


# --- the event filter (webhook_events_filter): completed by default, started on request --------------------------

RENDER = {"num_inference_steps": 1, "num_frames": 2}


def delivery_log(s: Stack, job_id: str, n: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The job's delivery log once it has n events, each of them settled (delivered, or retried at least once)."""
    deadline = time.monotonic() + timeout
    while True:
        log = list(s.client.get(f"/v1/jobs/{job_id}/webhooks", headers=s.headers).json()["items"])
        settled = len(log) >= n and all(d["status"] == "delivered" or d["attempts"] > 0 for d in log)
        if settled or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def test_by_default_a_job_gets_only_its_terminal_event(sqlite_stack: Stack, receiver: Receiver) -> None:
    s = sqlite_stack
    job = s.submit(s.upload()["id"], params=RENDER, reuse=False, webhook_url=receiver.url)
    assert job["webhook_events_filter"] == ["completed"]
    done = s.wait(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1  # a worker rendered it: it did start
    reqs = receiver.wait_for(1)
    time.sleep(1.5)  # the sender passes every second: a started event would have come by now
    assert [verify(secret_of(s), r)["type"] for r in reqs] == ["job.succeeded"]
    assert [d["event"] for d in delivery_log(s, job["id"], 1)] == ["job.succeeded"]
    assert s.client.get(f"/v1/jobs/{job['id']}", headers=s.headers).json()["webhook_events_filter"] == ["completed"]


def test_started_and_completed_are_both_delivered_in_order_each_signed(sqlite_stack: Stack,
                                                                        receiver: Receiver) -> None:
    s = sqlite_stack
    job = s.submit(s.upload()["id"], params=RENDER, reuse=False, webhook_url=receiver.url,
                   webhook_events_filter=["completed", "started", "started"])
    assert job["webhook_events_filter"] == ["started", "completed"]  # each once, in the order they happen
    assert s.wait(job["id"])["status"] == "succeeded"
    reqs = receiver.wait_for(2)
    time.sleep(1.5)  # and nothing more
    events = [verify(secret_of(s), r) for r in reqs]  # both signed with the key's secret
    assert [e["type"] for e in events] == ["job.started", "job.succeeded"]
    assert {e["data"]["id"] for e in events} == {job["id"]}
    assert len({r["headers"]["webhook-id"] for r in reqs}) == 2  # two events, one stable id each
    log = delivery_log(s, job["id"], 2)
    assert [(d["event"], d["status"]) for d in log] == [("job.started", "delivered"), ("job.succeeded", "delivered")]
    assert [d["id"] for d in log] == [r["headers"]["webhook-id"] for r in reqs]
    got = s.client.get(f"/v1/jobs/{job['id']}", headers=s.headers).json()
    assert got["webhook_events_filter"] == ["started", "completed"]


def test_a_receiver_that_is_down_never_holds_up_or_fails_the_render(sqlite_stack: Stack) -> None:
    from client.procs import free_port

    s = sqlite_stack
    job = s.submit(s.upload()["id"], params=RENDER, reuse=False, webhook_events_filter=["started", "completed"],
                   webhook_url=f"http://127.0.0.1:{free_port()}/hook")  # nothing listens there
    assert s.wait(job["id"], timeout=60)["status"] == "succeeded"
    log = delivery_log(s, job["id"], 2)
    assert [d["event"] for d in log] == ["job.started", "job.succeeded"]
    assert all(d["status"] != "delivered" and d["attempts"] >= 1 and d["last_error"] for d in log), log


def test_a_sweep_gets_started_once_then_its_terminal_event(sqlite_stack: Stack, receiver: Receiver) -> None:
    s = sqlite_stack
    image = s.upload()
    body = {"model": "tiny", "images": [{"image_id": image["id"]}], "webhook_url": receiver.url, "reuse": False,
            "webhook_events_filter": ["started", "completed"], "params": {**RENDER, "seed": 9},
            "axes": {"fps": [6, 8]}}
    r = s.client.post("/v1/sweeps", headers=s.headers, json=body)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert sweep["webhook_events_filter"] == ["started", "completed"]
    reqs = receiver.wait_for(2, timeout=120)
    time.sleep(1.5)  # its second cell starting adds nothing
    events = [verify(secret_of(s), req) for req in reqs]
    assert [e["type"] for e in events] == ["sweep.started", "sweep.succeeded"]
    assert {e["data"]["id"] for e in events} == {sweep["id"]}
    # the cells themselves carry no webhook of their own
    cells = s.client.get(f"/v1/sweeps/{sweep['id']}/jobs", headers=s.headers).json()["items"]
    assert len(cells) == 2 and all(c["status"] == "succeeded" for c in cells)


def test_the_started_event_is_recorded_once_however_often_the_job_is_claimed(tmp_path: Path) -> None:
    from models import lifecycle
    from models.tables import Image, Job

    db = f"sqlite:///{tmp_path}/started.db"
    upgrade(db)
    engine = create_db_engine(db)
    sessions = create_session_factory(engine)
    with sessions() as s:
        key = store_key(s, new_key_string(), name="started")
        s.add(Image(id="img_1", owner_id=key.id, sha256="0" * 64, width=64, height=64, content_type="image/png",
                    bytes=1, storage_key="images/img_1"))
        for job_id, events in (("job_both", ["started", "completed"]), ("job_default", None)):
            s.add(Job(id=job_id, owner_id=key.id, model="tiny", image_id="img_1", params={}, output={},
                      webhook_url="https://hooks.example.org/x", webhook_events=events, status="running"))
        s.commit()
        for _ in range(3):  # the first claim, then two retries of the same job
            lifecycle.job_started(s, "job_both")
            lifecycle.job_started(s, "job_default")
        rows = s.query(WebhookDelivery).all()
        assert [(d.resource_id, d.event) for d in rows] == [("job_both", "job.started")]
    engine.dispose()


def test_an_unknown_event_name_is_refused_with_the_names_allowed(tmp_path: Path, redis_url: str) -> None:
    from tests.test_service import app_with

    with app_with(tmp_path, redis_url) as c:
        h = {"Authorization": "Bearer svdq_test_key_0123456789abcdef"}
        image = c.post("/v1/images", headers=h, files={"image": ("a.png", _png())}).json()
        spec = {"model": "tiny", "webhook_url": "https://hooks.example.org/x",
                "webhook_events_filter": ["started", "output"]}
        answers = {
            "json": c.post("/v1/jobs", headers=h, json={**spec, "image_id": image["id"]}),
            "multipart": c.post("/v1/jobs", headers=h, files={"image": ("a.png", _png())},
                                data={"spec": json.dumps(spec)}),
            "sweep": c.post("/v1/sweeps", headers=h, json={**spec, "images": [{"image_id": image["id"]}],
                                                          "axes": {"fps": [6, 8]}}),
        }
        for kind, r in answers.items():
            assert r.status_code == 422, (kind, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_params", kind
            assert [(d["field"], d["message"]) for d in error["details"]] == [
                ("webhook_events_filter.1", "must be 'started' or 'completed', got 'output'")], kind
        empty = c.post("/v1/jobs", headers=h, json={**spec, "image_id": image["id"], "webhook_events_filter": []})
        assert empty.status_code == 422 and empty.json()["error"]["details"][0]["field"] == "webhook_events_filter"
        assert c.get("/v1/jobs", headers=h).json()["items"] == []  # nothing was made
        # the OpenAPI document publishes the filter, its names and its default, on jobs and sweeps
        doc = c.get("/openapi.json").json()
        schemas = doc["components"]["schemas"]
        for name in ("JobCreate", "JobSpec", "SweepSpec"):
            prop = schemas[name]["properties"]["webhook_events_filter"]
            assert prop["items"]["enum"] == ["started", "completed"] and prop["default"] == ["completed"], name


def test_the_sdk_submits_the_filter_and_its_job_type_carries_it(sqlite_stack: Stack, receiver: Receiver) -> None:
    from client.sdk import Client
    from ops.harness.stack import API_KEY

    s = sqlite_stack
    with Client(s.serve(), API_KEY) as c:
        job = c.submit(image_id=s.upload()["id"], webhook_url=receiver.url, webhook_events_filter=["started"],
                       reuse=False, **RENDER)
        assert job.webhook_events_filter == ["started"]
        assert c.wait(job, timeout=60).status == "succeeded"
        assert c.get(job).webhook_events_filter == ["started"]
    reqs = receiver.wait_for(1)
    time.sleep(1.5)  # started only: its end is not sent
    assert [verify(secret_of(s), r)["type"] for r in reqs] == ["job.started"]
