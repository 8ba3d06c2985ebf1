"""What one API process makes at start: built by create_app from settings, never at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.key_cache import KeyCache
from api.memo import Memo
from api.rate import RateLimiter
from api.readers import Reader
from models.events import JobSignals
from models.lifecycle import Effects
from models.queue import make_enqueue, make_grid_enqueue
from models.settings import Settings
from models.storage import LocalStore, S3Store
from models.tables import Image


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    reads: Reader  # runs the hot reads (api/readers.py)
    sessions: sessionmaker[Session]
    store: LocalStore | S3Store
    celery: Celery
    redis: Any  # redis.Redis
    aredis: Any  # redis.asyncio.Redis, for the event streams
    signals: JobSignals
    fx: Effects = field(init=False)  # what the lifecycle steps send, through this process's Celery app
    keys: KeyCache = field(init=False)
    rate: RateLimiter = field(init=False)
    images: Memo[str, Image] = field(init=False)  # image rows by id: they never change once stored
    revisions: Memo[str, frozenset[str]] = field(init=False)  # per model: what its ready workers hold, for a second

    def __post_init__(self) -> None:
        self.keys = KeyCache(self.settings.key_cache_s)
        self.rate = RateLimiter(self.aredis)
        self.images = Memo(ttl_s=None, size=10_000)
        self.revisions = Memo(ttl_s=1.0, size=64)
        self.fx = Effects(signals=self.signals, enqueue=make_enqueue(self.celery),
                          enqueue_grid=make_grid_enqueue(self.celery))
