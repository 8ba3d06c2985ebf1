"""Idempotency-Key on creating POSTs: the same key and body return the first result; the same key with
another body is a conflict; a key older than SVDQ_IDEMPOTENCY_RETENTION_S is forgotten (models/retention.py).
A unique (owner, key) row makes concurrent duplicates safe: one inserts, the others wait for its result."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import ApiError
from models.retention import cutoff
from models.tables import IdempotencyKey, utcnow

WAIT_S = 15.0


def request_hash(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def claim(session: Session, *, owner_id: str, key: str, digest: str, retention_s: float = 0) -> str | None:
    """None: this request owns the key and must create the resource. Otherwise the id created before. A key older
    than `retention_s` (0: none is) is forgotten here, whether or not the maintenance pass deleted it yet."""
    session.add(IdempotencyKey(owner_id=owner_id, key=key, request_hash=digest, created_at=utcnow()))
    try:
        session.commit()
        return None
    except IntegrityError:
        session.rollback()
    deadline = time.monotonic() + WAIT_S
    while True:
        row = session.get(IdempotencyKey, (owner_id, key), populate_existing=True)
        if row is None:  # the first request failed and let the key go: take it over
            return claim(session, owner_id=owner_id, key=key, digest=digest, retention_s=retention_s)
        before = cutoff(retention_s)
        if before is not None and row.created_at < before and row.resource_id is not None:
            # expired: forgotten, as if the pass had deleted it (of racing requests one deletes, one inserts)
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.owner_id == owner_id,
                                                         IdempotencyKey.key == key, IdempotencyKey.created_at < before,
                                                         IdempotencyKey.resource_id.is_not(None)))
            session.commit()
            return claim(session, owner_id=owner_id, key=key, digest=digest, retention_s=retention_s)
        if row.request_hash != digest:
            raise ApiError(409, "idempotency_conflict", "This Idempotency-Key was used with a different request "
                           "body; use a new key for a new request.")
        if row.resource_id is not None:
            return row.resource_id
        if time.monotonic() > deadline:
            raise ApiError(409, "idempotency_in_progress", "A request with this Idempotency-Key is still being "
                           "processed; retry in a few seconds.", headers={"Retry-After": "2"})
        session.rollback()
        time.sleep(0.05)


def complete(session: Session, *, owner_id: str, key: str, resource_id: str) -> None:
    session.execute(update(IdempotencyKey).where(IdempotencyKey.owner_id == owner_id, IdempotencyKey.key == key)
                    .values(resource_id=resource_id))
    session.commit()


def release(session: Session, *, owner_id: str, key: str) -> None:
    """The request failed before creating anything: a retry with the same key may try again."""
    session.rollback()
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.owner_id == owner_id, IdempotencyKey.key == key,
                                                 IdempotencyKey.resource_id.is_(None)))
    session.commit()
