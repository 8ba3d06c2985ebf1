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
