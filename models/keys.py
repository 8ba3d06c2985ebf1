"""API keys: shown once, stored as SHA-256 with a non-secret prefix for lookup, compared in constant time, and
each key's own limits. Keys are high-entropy random strings, so a fast hash is enough (no password stretching).
The API reads them on every request; `svdq keys ...` and the tests write them through the same functions."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.settings import Settings
from models.tables import ApiKey, utcnow
from models.webhooks import new_secret

PREFIX_LEN = 12
# the API processes' key caches listen here (api/auth.py); a message is a key id whose row changed
KEY_CHANGES = "svdq:keys:changed"
# the columns a key may set for itself; None in a column means the service-wide setting
LIMIT_COLUMNS = ("rate_limit_per_s", "max_open_jobs", "max_sweep_cells")
log = logging.getLogger("svdq.keys")


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
        try:
            return store_key(session, key, name=name, is_admin=True)
        except IntegrityError:  # another API process made it just now
            session.rollback()
            row = session.scalars(select(ApiKey).where(ApiKey.prefix == key_prefix(key))).one()
    if not hmac.compare_digest(row.key_hash, hash_key(key)):
        raise ValueError("SVDQ_BOOTSTRAP_API_KEY shares its prefix with another key; set a new random one")
    if row.revoked_at is not None:
        log.warning("SVDQ_BOOTSTRAP_API_KEY was revoked (%s) and stays revoked; set a new one to bootstrap again",
                    row.id)
    return row


def find_key(session: Session, key: str) -> ApiKey | None:
    """The active key this secret belongs to, or None (unknown, malformed or revoked)."""
    if not key or len(key) > 512:
        return None
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == key_prefix(key))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row if hmac.compare_digest(row.key_hash, hash_key(key)) else None


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, key_id: str) -> bool:
    """False when there is no active key with this id."""
    res = session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                          .values(revoked_at=utcnow()))
    session.commit()
    return bool(res.rowcount)  # type: ignore[attr-defined]


def set_key_limits(session: Session, key_id: str, limits: dict[str, int | None]) -> bool:
    """Set some of a key's own limits (None: back to the service-wide setting); False when there is no such key."""
    unknown = set(limits) - set(LIMIT_COLUMNS)
    if unknown:
        raise ValueError(f"not a per-key limit: {', '.join(sorted(unknown))}")
    res = session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**limits))
    session.commit()
    return bool(res.rowcount)  # type: ignore[attr-defined]


def announce_key_change(redis: Any, key_id: str) -> bool:
    """Tell every API process to forget what it remembers of this key (after a revoke or new limits). Best effort:
    False when Redis did not take it, and then the caches let go within Settings.key_cache_s."""
    try:
        redis.publish(KEY_CHANGES, key_id)
    except Exception as exc:  # noqa: BLE001 - Redis away: the cache bound still holds
        log.warning("key change of %s not announced: %s", key_id, exc)
        return False
    return True


@dataclass(frozen=True)
class KeyLimits:
    rate_limit_per_s: int
    max_open_jobs: int
    max_sweep_cells: int

    def as_dict(self) -> dict[str, int]:
        return {"rate_limit_per_s": self.rate_limit_per_s, "max_open_jobs": self.max_open_jobs,
                "max_sweep_cells": self.max_sweep_cells}


def limits_for(key: ApiKey, settings: Settings) -> KeyLimits:
    """The key's own limits where it has them, else the service-wide settings."""
    def pick(own: int | None, default: int) -> int:
        return default if own is None else own

    return KeyLimits(rate_limit_per_s=pick(key.rate_limit_per_s, settings.rate_limit_per_s),
                     max_open_jobs=pick(key.max_open_jobs, settings.max_open_jobs_per_key),
                     max_sweep_cells=pick(key.max_sweep_cells, settings.max_sweep_cells))
