"""client.webhooks.verify_webhook, the SDK's receiver-side check, against deliveries signed by the Standard
Webhooks library itself (and against what that library refuses)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from client.sdk import SvdqError
from client.webhooks import verify_webhook
from models.webhooks import new_secret

BODY = json.dumps({"type": "job.succeeded", "data": {"id": "job_1", "status": "succeeded"}}).encode()


def delivery(secret: str, body: bytes = BODY, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(tz=UTC)
    signature = Webhook(secret).sign("msg_1", at, body.decode())
    return {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(int(at.timestamp())), "Webhook-Signature": signature}


def test_a_delivery_the_library_signs_verifies_and_answers_its_event() -> None:
    secret = new_secret()
    event = verify_webhook(secret, BODY, delivery(secret))
    assert event == json.loads(BODY)
    assert event == Webhook(secret).verify(BODY, delivery(secret))  # the library agrees


def test_a_rotated_secret_still_verifies_among_several_signatures() -> None:
    old, new = new_secret(), new_secret()
    headers = delivery(new)
    headers["Webhook-Signature"] = f"{delivery(old)['Webhook-Signature']} {headers['Webhook-Signature']}"
    assert verify_webhook(new, BODY, headers)["type"] == "job.succeeded"


@pytest.mark.parametrize("tamper", ["body", "secret", "old", "headers", "garbage"])
def test_what_the_library_refuses_is_refused(tamper: str) -> None:
    secret = new_secret()
    headers, body, key = delivery(secret), BODY, secret
    if tamper == "body":
        body = BODY.replace(b"succeeded", b"failed", 1)
    elif tamper == "secret":
        key = new_secret()
    elif tamper == "old":
        headers = delivery(secret, at=datetime.fromtimestamp(datetime.now(tz=UTC).timestamp() - 3600, tz=UTC))
    elif tamper == "headers":
        del headers["Webhook-Id"]
    else:
        headers["Webhook-Signature"] = "v1,not-base64!!"
    with pytest.raises((WebhookVerificationError, ValueError)):  # garbage: the library's base64 error
        Webhook(key).verify(body, headers)
    with pytest.raises(SvdqError) as exc:
        verify_webhook(key, body, headers)
    assert exc.value.code == "webhook_invalid" and exc.value.message.endswith("refuse this delivery.")


def test_a_secret_that_is_no_whsec_key_says_so() -> None:
    with pytest.raises(SvdqError) as exc:
        verify_webhook("not a secret!", BODY, delivery(new_secret()))
    assert exc.value.code == "bad_secret"
