"""The Celery app as Celery's own command line finds it, for operators:

    SVDQ_REDIS_URL=redis://... celery -A models.celery_app inspect active
    SVDQ_REDIS_URL=redis://... celery -A models.celery_app purge -Q render.svd-xt

It is the app every svdq process builds from its settings (models/queue.py), made when Celery asks for it
(`app`), not at import, so importing this module still makes nothing."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _app() -> Any:
    from models.queue import create_celery
    from models.settings import Settings

    return create_celery(Settings())


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
