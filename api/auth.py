"""API keys: shown once, stored as SHA-256 with a non-secret prefix for lookup, compared in constant time.
Keys are high-entropy random strings, so a fast hash is enough (no password stretching needed)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import ApiKey, utcnow
from models.webhooks import new_secret

PREFIX_LEN = 12
log = logging.getLogger("svdq.api")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key.removeprefix("svdq_")[:PREFIX_LEN]


def new_key_string() -> str:
    return "svdq_" + secrets.token_urlsafe(32)


def store_key(session: Session, key: str, *, name: str, is_admin: bool = False,
              limits: dict[str, int | None] | None = None) -> ApiKey:
    """`limits` may set rate_limit_per_s, max_open_jobs and max_sweep_cells for this key alone."""
    row = ApiKey(id="key_" + secrets.token_hex(8), name=name, prefix=key_prefix(key),
                 key_hash=hash_key(key), is_admin=is_admin, created_at=utcnow(), webhook_secret=new_secret(),
                 **(limits or {}))
    session.add(row)
    session.commit()
    return row


def ensure_key(session: Session, key: str, *, name: str) -> ApiKey:
    """The bootstrap key's row, made if missing. A revoked one stays revoked: a restart must not bring back a
    key an operator took away."""
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == key_prefix(key))).first()
    if row is None:
        return store_key(session, key, name=name, is_admin=True)
    if not hmac.compare_digest(row.key_hash, hash_key(key)):
        raise ValueError("SVDQ_BOOTSTRAP_API_KEY shares its prefix with another key; set a new random one")
    if row.revoked_at is not None:
        log.warning("SVDQ_BOOTSTRAP_API_KEY was revoked (%s) and stays revoked; set a new one to bootstrap again",
                    row.id)
    return row


def find_key(session: Session, key: str) -> ApiKey | None:
    if not key or len(key) > 512:
        return None
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == key_prefix(key))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row if hmac.compare_digest(row.key_hash, hash_key(key)) else None
