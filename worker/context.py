"""What a worker process makes once at start and hands to every task (arq's on_startup ctx)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.db import create_db_engine, create_session_factory
from models.events import JobSignals
from models.postprocess import postprocess_methods
from models.registry import ModelSpec, get_spec
from models.settings import Settings
from models.storage import LocalStore, S3Store, open_store
from models.tiny import ensure_tiny
from worker.pipeline import PipelineHolder

if TYPE_CHECKING:
    from worker.learned import LearnedModels
    from worker.metrics import WorkerMetrics

log = logging.getLogger("svdq.worker")


def worker_name(model: str, device: str, gpu: str | None, pid: int, host: str) -> str:
    """The Celery node name Flower lists and job rows record: model, device, and the pid that tells two
    workers on one host apart (tests and ops find a worker by its `w<pid>@`)."""
    where = f"gpu{gpu}" if gpu is not None else device.replace(":", "")
    return f"{model}-{where}-w{pid}@{host}"


@dataclass
class WorkerContext:
    settings: Settings
    spec: ModelSpec
    name: str
    engine: Engine
    sessions: sessionmaker[Session]
    store: LocalStore | S3Store
    holder: PipelineHolder
    signals: JobSignals
    # set by the Celery binding: (job_id, model, priority, countdown_s) -> None
    enqueue: Callable[[str, str, int, float], None] | None = None
    enqueue_grid: Callable[[str, str, str], None] | None = None  # (sweep_id, image_id, model)
    jobs_done: int = field(default=0)
    # set when the worker is asked to stop (SIGTERM): the current render gets shutdown_grace_s more
    shutdown_requested_at: float | None = None
    # the learned post-processing models, loaded at start where their weights are configured
    learned: LearnedModels | None = None
    metrics: WorkerMetrics | None = None  # set by worker.metrics.start_exporter when its port is on

    @property
    def time_limit_s(self) -> float:
        return self.settings.time_limit_s or self.spec.time_limit_s

    @classmethod
    def create(cls, settings: Settings, model: str, *, gpu: str | None = None) -> WorkerContext:
        spec = get_spec(model)
        if spec is None:
            raise ValueError(f"unknown model {model!r}")
        source = settings.model_source(model)
        if source is None:  # the tiny model: built once into the cache
            source = str(ensure_tiny(settings.cache_dir))
        engine = create_db_engine(settings.database_url)
        name = f"{model}-{'gpu' + gpu if gpu is not None else 'w'}{os.getpid()}@{socket.gethostname()}"
        return cls(
            settings=settings, spec=spec, name=name, engine=engine,
            sessions=create_session_factory(engine), store=open_store(settings),
            holder=PipelineHolder.from_settings(settings, model=model, source=source),
            signals=JobSignals(redis.Redis.from_url(settings.redis_url, socket_timeout=5)
                               if settings.redis_url else None),
        )

    def start(self) -> None:
        log.info("loading %s from %s on %s", self.spec.name, self.holder.source, self.holder.device)
        self.holder.load()
        log.info("pipeline ready in %.1fs", self.holder.load_seconds)
        if self.holder.compile:  # compile here, at the model's default size, so no job pays for it
            log.info("compile warm-up render done in %.1fs", self.holder.warm_up(self.spec.defaults))
        if self.settings.learned_stages():
            from worker.learned import LearnedModels

            self.learned = LearnedModels.load(interpolate_weights=self.settings.interpolate_weights,
                                              upscale_weights=self.settings.upscale_weights, device=self.holder.device)
            log.info("learned post-processing ready: %s", ", ".join(sorted(self.learned.stages())))

    def postprocess_methods(self) -> dict[str, list[str]]:
        """What this worker advertises in its heartbeat: each stage's methods, "learned" where a model loaded."""
        return postprocess_methods(self.learned.stages() if self.learned is not None else ())
