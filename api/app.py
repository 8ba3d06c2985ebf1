"""The app factory: every API process builds its app from settings; nothing exists at import time."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio
from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.errors import install_error_handlers
from api.key_cache import follow_key_changes, stop_following
from api.metrics import install_metrics
from api.openapi import install_openapi
from api.readers import open_reader
from api.request_limits import BodySizeLimit, ConcurrencyLimit
from api.routers import images, jobs, keys, models, service, sweeps, ui
from api.state import AppState
from models.db import create_db_engine, create_session_factory
from models.events import JobSignals
from models.keys import ensure_key
from models.queue import create_celery
from models.settings import Settings
from models.storage import open_store

log = logging.getLogger("svdq.api")


def operation_id(route: APIRoute) -> str:
    """Operation ids are the route names (create_job, get_job, ...): what generated clients call their functions."""
    return route.name


def app_from_env() -> FastAPI:
    """What `svdq api` serves in each of its processes: logging set up, the app built from the environment."""
    from models.logs import setup_logging

    setup_logging()
    return create_app()


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, the app, its routes and schemas: ~150,000 objects) to the collector's
    permanent generation. A full collection walks every tracked object and runs on the event loop: before this,
    each one paused every request in flight for 20-60 ms under load. What requests make later is collected as
    before (and cheaply: the frozen objects are not walked again)."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = create_db_engine(settings.database_url, ping=False)
    sync_redis = redis.Redis.from_url(settings.redis_url or "", socket_timeout=2, socket_connect_timeout=2)
    state = AppState(
        settings=settings, engine=engine, reads=open_reader(settings.database_url),
        sessions=create_session_factory(engine),
        store=open_store(settings), celery=create_celery(settings), redis=sync_redis,
        aredis=redis.asyncio.Redis.from_url(settings.redis_url or "", socket_connect_timeout=2),
        signals=JobSignals(sync_redis),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.bootstrap_api_key:
            with state.sessions() as session:
                ensure_key(session, settings.bootstrap_api_key, name="bootstrap")
        follower = asyncio.create_task(follow_key_changes(state.aredis, state.keys), name="svdq-key-changes")
        freeze_startup_objects()
        yield
        await stop_following(follower)
        await state.aredis.aclose()
        state.redis.close()
        engine.dispose()
        await state.reads.close()

    app = FastAPI(title="svdq", version="1", lifespan=lifespan, generate_unique_id_function=operation_id,
                  description="Stable Video Diffusion as a job service: images in, videos out.")
    app.state.svdq = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + 64 * 1024)
    app.add_middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests)
    for r in (service.router, images.router, jobs.router, sweeps.router, models.router, keys.router, ui.router):
        app.include_router(r)
    install_metrics(app, state)
    install_openapi(app)
    return app
