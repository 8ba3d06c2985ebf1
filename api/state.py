"""What one API process makes at start: built by create_app from settings, never at import time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.events import JobSignals
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
