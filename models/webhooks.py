"""Webhooks, the Standard Webhooks way: a job (or sweep) records one event with a stable id when it reaches a
point its event filter names (see models/lifecycle.py), and the workers' sender (worker/webhook_sender.py) delivers
it at least once, signed with the key's secret, retrying with backoff and jitter. Here: the event filter, the
secret, the signature, the id and the record.

The filter (`webhook_events_filter`, after Replicate's): `started` (the render began on a worker: `job.started`;
a sweep's first cell began: `sweep.started`) and `completed` (a terminal status: `job.succeeded`, `job.failed`,
`job.canceled`, and the same for sweeps). Without one, `completed` only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.tables import WebhookDelivery, utcnow

WebhookEvent = Literal["started", "completed"]
WEBHOOK_EVENTS: tuple[str, ...] = get_args(WebhookEvent)  # in the order they happen
DEFAULT_EVENTS: tuple[WebhookEvent, ...] = ("completed",)


def event_filter(events: Iterable[str] | None) -> list[str]:
    """A filter as stored and shown: each event once, in the order they happen; None gives the default."""
    chosen = set(DEFAULT_EVENTS if events is None else events)
    return [e for e in WEBHOOK_EVENTS if e in chosen]


def wants(stored: Sequence[str] | None, event: str) -> bool:
    """Whether a job's (or sweep's) stored filter asks for this event (null: the default)."""
    return event in (DEFAULT_EVENTS if stored is None else stored)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def event_id(resource_id: str, event: str) -> str:
    return "msg_" + hashlib.sha256(f"{resource_id}:{event}".encode()).hexdigest()[:24]


def record_event(session: Session, *, owner_id: str, resource_id: str, event: str, url: str) -> None:
    """Insert the event once: a second terminal report of the same resource adds nothing."""
    values = {"id": event_id(resource_id, event), "owner_id": owner_id, "resource_id": resource_id,
              "event": event, "url": url, "status": "pending", "attempts": 0, "next_attempt_at": utcnow(),
              "created_at": utcnow()}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(WebhookDelivery).values(**values).on_conflict_do_nothing(index_elements=["id"]))
    session.commit()
