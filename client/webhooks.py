"""Checking a webhook delivery as a receiver: `verify_webhook(secret, body, headers)` answers the event
(`{"type": "job.succeeded", "data": {...the job...}, ...}`) or raises SvdqError `webhook_invalid`. It follows
the Standard Webhooks rules (what the standardwebhooks library checks, with the core install's stdlib only):
the HMAC-SHA256 of "id.timestamp.body" under the key's `whsec_` secret, any one of the space-separated `v1,`
signatures (a rotated secret's too), and a timestamp within `tolerance_s` of now (no replay of old ones)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from client._errors import SvdqError

TOLERANCE_S = 300


def _invalid(why: str) -> SvdqError:
    return SvdqError(0, "webhook_invalid", f"{why}; refuse this delivery.")


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str], *, tolerance_s: float = TOLERANCE_S,
                   now: float | None = None) -> dict[str, Any]:
    """The delivery's event, once its signature and timestamp check out."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise _invalid("The webhook-id, webhook-timestamp and webhook-signature headers are required")
    try:
        sent = int(stamp)
    except ValueError:
        raise _invalid(f"webhook-timestamp {stamp!r} is not a Unix time") from None
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        raise _invalid(f"webhook-timestamp is more than {tolerance_s:g} s from now (a replay, or a wrong clock)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise SvdqError(0, "bad_secret", "The secret is not a whsec_ key (svdq keys create prints it; "
                        "GET /v1/keys/self shows it).") from None
    expected = hmac.new(key, f"{msg_id}.{sent}.".encode() + raw, hashlib.sha256).digest()
    for versioned in signatures.split():
        version, _, sig = versioned.partition(",")
        try:
            given = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        if version == "v1" and hmac.compare_digest(given, expected):
            event: dict[str, Any] = json.loads(raw)
            return event
    raise _invalid("No signature matches the body under this secret")
