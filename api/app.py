"""The app factory: every API process builds its app from settings; nothing exists at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio
from fastapi import FastAPI

from api.errors import install_error_handlers
from api.limits import BodySizeLimit, ConcurrencyLimit
from api.metrics import install_metrics
from api.routers import images, jobs, models, service, sweeps, ui
from api.state import AppState
from models.db import create_db_engine, create_session_factory
from models.events import JobSignals
from models.keys import ensure_key
from models.queue import create_celery
from models.settings import Settings
from models.storage import open_store

log = logging.getLogger("svdq.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = create_db_engine(settings.database_url)
    sync_redis = redis.Redis.from_url(settings.redis_url or "", socket_timeout=2, socket_connect_timeout=2)
    state = AppState(
        settings=settings, engine=engine, sessions=create_session_factory(engine),
        store=open_store(settings), celery=create_celery(settings), redis=sync_redis,
        aredis=redis.asyncio.Redis.from_url(settings.redis_url or "", socket_connect_timeout=2),
        signals=JobSignals(sync_redis),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.bootstrap_api_key:
            with state.sessions() as session:
                ensure_key(session, settings.bootstrap_api_key, name="bootstrap")
        yield
        await state.aredis.aclose()
        state.redis.close()
        engine.dispose()

    app = FastAPI(title="svdq", version="1", lifespan=lifespan,
                  description="Stable Video Diffusion as a job service: images in, videos out.")
    app.state.svdq = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + 64 * 1024)
    app.add_middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests)
    for r in (service.router, images.router, jobs.router, sweeps.router, models.router, models.keys_router,
              ui.router):
        app.include_router(r)
    install_metrics(app, state)
    return app
