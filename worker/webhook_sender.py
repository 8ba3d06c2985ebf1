"""The workers' webhook sender: every `every` seconds, the due events (models/webhooks.py records them) are
posted, signed with their key's secret, and retried with backoff and jitter until delivered or out of attempts.
Each row is claimed with a conditional update, so senders in many processes never post the same attempt twice at
once. A start/stop service of the worker process (worker/process.py)."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models.netcheck import Resolver, UrlRejected, check_url, is_public, pinned, system_resolver
from models.tables import ApiKey, WebhookDelivery, utcnow
from models.views import Payload
from models.webhooks import sign

log = logging.getLogger("svdq.webhooks")


class WebhookSender:
    """Delivers due events every `every` seconds from a daemon thread."""

    name = "webhook sender"

    def __init__(self, *, sessions: sessionmaker[Session], payload: Payload, allow_private: bool,
                 max_attempts: int = 8, timeout_s: float = 5.0, every: float = 1.0,
                 base_backoff_s: float = 5.0, resolve: Resolver = system_resolver,
                 public: Callable[[str], bool] = is_public) -> None:
        self.sessions, self.payload, self.allow_private = sessions, payload, allow_private
        self.resolve, self.public = resolve, public
        self.max_attempts, self.timeout, self.every, self.base_backoff = max_attempts, timeout_s, every, base_backoff_s
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svdq-webhooks", daemon=True)

    def _claim(self, session: Session, delivery_id: str) -> bool:
        now = utcnow()
        res = session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now).values(next_attempt_at=now + timedelta(seconds=60)))
        session.commit()
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def _post(self, session: Session, d: WebhookDelivery) -> str | None:
        """None when delivered, else why not."""
        body_obj = self.payload(session, d)
        key = session.get(ApiKey, d.owner_id)
        if body_obj is None or key is None or not key.webhook_secret:
            return "nothing to send (resource or signing secret missing)"
        try:  # again at delivery: DNS may have changed since the submit
            addresses = check_url(d.url, allow_private=self.allow_private, resolve=self.resolve, public=self.public)
        except UrlRejected as exc:
            return f"refused: {exc}"
        # and the POST goes to the address just checked: letting httpx resolve the name again would let it
        # answer a private address this time (DNS rebinding)
        target, host, extensions = pinned(d.url, addresses[0])
        body = json.dumps({"type": d.event, "timestamp": utcnow().isoformat(), "data": body_obj}).encode()
        ts = int(time.time())
        headers = {"host": host, "content-type": "application/json", "webhook-id": d.id,
                   "webhook-timestamp": str(ts), "webhook-signature": sign(key.webhook_secret, d.id, ts, body)}
        try:
            r = self.http.post(target, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            return f"{exc.__class__.__name__}: {exc}"
        return None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"

    def run_once(self) -> int:
        sent = 0
        with self.sessions() as session:
            due = session.scalars(select(WebhookDelivery.id).where(
                WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
                .order_by(WebhookDelivery.next_attempt_at).limit(20)).all()
            for delivery_id in due:
                if not self._claim(session, delivery_id):
                    continue
                d = session.get(WebhookDelivery, delivery_id, populate_existing=True)
                assert d is not None
                error = self._post(session, d)
                attempts = d.attempts + 1
                if error is None:
                    values: dict[str, Any] = {"status": "delivered", "delivered_at": utcnow(), "attempts": attempts,
                                              "last_error": None}
                    sent += 1
                elif attempts >= self.max_attempts or error.startswith("refused"):
                    values = {"status": "failed", "attempts": attempts, "last_error": error}
                else:
                    backoff = self.base_backoff * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)
                    values = {"attempts": attempts, "last_error": error,
                              "next_attempt_at": utcnow() + timedelta(seconds=min(backoff, 3600))}
                session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values))
                session.commit()
                # the host only: a webhook URL's path or query may carry the receiver's token
                subject = {"job_id": d.resource_id} if d.resource_id.startswith("job_") else {}
                log.info("webhook %s %s to %s: %s", d.id, d.event, urlsplit(d.url).netloc, error or "delivered",
                         extra=subject)
        return sent

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("webhook pass failed: %s", exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
