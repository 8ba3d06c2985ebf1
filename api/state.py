"""What one API process makes at start: built by create_app from settings, never at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.events import JobSignals
from models.lifecycle import Effects
from models.queue import make_enqueue, make_grid_enqueue
from models.settings import Settings
from models.storage import LocalStore, S3Store


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: LocalStore | S3Store
    celery: Celery
    redis: Any  # redis.Redis
    aredis: Any  # redis.asyncio.Redis, for the event streams
    signals: JobSignals
    fx: Effects = field(init=False)  # what the lifecycle steps send, through this process's Celery app

    def __post_init__(self) -> None:
        self.fx = Effects(signals=self.signals, enqueue=make_enqueue(self.celery),
                          enqueue_grid=make_grid_enqueue(self.celery))
