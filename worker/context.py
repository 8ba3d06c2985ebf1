"""What a worker process makes once, complete, before it takes a message, and hands to every task (arq's
on_startup ctx): settings, its name, the database, storage, Redis signals, the message senders, the loaded
pipeline (warmed when compiled), the learned post-processing models, and its metrics."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis
from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.db import create_db_engine, create_session_factory
from models.events import JobSignals
from models.lifecycle import Effects
from models.postprocess import postprocess_methods
from models.queue import make_enqueue, make_grid_enqueue
from models.registry import ModelSpec, get_spec
from models.settings import Settings
from models.storage import LocalStore, S3Store, open_store
from models.tiny import ensure_tiny
from worker.metrics import WorkerMetrics
from worker.pipeline import PipelineHolder

if TYPE_CHECKING:
    from worker.learned import LearnedModels

log = logging.getLogger("svdq.worker")


def worker_name(model: str, device: str, gpu: str | None, pid: int, host: str) -> str:
    """The Celery node name Flower lists and job rows record: model, device, and the pid that tells two
    workers on one host apart (tests and ops find a worker by its `w<pid>@`)."""
    where = f"gpu{gpu}" if gpu is not None else device.replace(":", "")
    return f"{model}-{where}-w{pid}@{host}"


def load_learned(settings: Settings, device: str) -> LearnedModels | None:
    """The learned post-processing models whose weights the settings name, loaded on the worker's device."""
    if not settings.learned_stages():
        return None
    from worker.learned import LearnedModels

    learned = LearnedModels.load(interpolate_weights=settings.interpolate_weights,
                                 upscale_weights=settings.upscale_weights, device=device)
    log.info("learned post-processing ready: %s", ", ".join(sorted(learned.stages())))
    return learned


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
    fx: Effects  # what the lifecycle steps send: signals, render and grid messages (from the task's own app)
    metrics: WorkerMetrics
    learned: LearnedModels | None = None
    jobs_done: int = field(default=0)
    # set when the worker is asked to stop (SIGTERM): the current render gets shutdown_grace_s more
    shutdown_requested_at: float | None = None

    @property
    def time_limit_s(self) -> float:
        return self.settings.time_limit_s or self.spec.time_limit_s

    @classmethod
    def load(cls, settings: Settings, model: str, *, celery: Celery, gpu: str | None = None) -> WorkerContext:
        """The whole context, with the pipeline loaded (and compiled by a warm-up render when compile is on).
        `celery` is the app the worker's tasks run in: its messages go out through the same connections."""
        spec = get_spec(model)
        if spec is None:
            raise ValueError(f"unknown model {model!r}")
        source = settings.model_source(model)
        if source is None:  # the tiny model: built once into the cache
            source = str(ensure_tiny(settings.cache_dir))
        holder = PipelineHolder.from_settings(settings, model=model, source=source)
        holder.locate()  # before anything else: missing weights end the start in one sentence (WeightsError)
        log.info("loading %s from %s on %s", spec.name, holder.path, holder.device)
        holder.load()
        log.info("pipeline ready in %.1fs", holder.load_seconds)
        if holder.compile:  # compile here, at the model's default size, so no job pays for it
            log.info("compile warm-up render done in %.1fs", holder.warm_up(spec.defaults))
        learned = load_learned(settings, holder.device)
        engine = create_db_engine(settings.database_url)
        signals = JobSignals(redis.Redis.from_url(settings.redis_url, socket_timeout=5) if settings.redis_url else None)
        metrics = WorkerMetrics(model)
        metrics.load_seconds.labels(model).set(holder.load_seconds)
        return cls(settings=settings, spec=spec, name=worker_name(model, holder.device, gpu, os.getpid(),
                                                                  socket.gethostname()),
                   engine=engine, sessions=create_session_factory(engine), store=open_store(settings), holder=holder,
                   signals=signals, fx=Effects(signals=signals, enqueue=make_enqueue(celery),
                                               enqueue_grid=make_grid_enqueue(celery)),
                   metrics=metrics, learned=learned)

    def postprocess_methods(self) -> dict[str, list[str]]:
        """What this worker advertises in its heartbeat: each stage's methods, "learned" where a model loaded."""
        return postprocess_methods(self.learned.stages() if self.learned is not None else ())

    def presence(self) -> dict[str, object]:
        """What its heartbeat carries, besides its name and model."""
        return {**self.holder.presence(), "pipeline_instance": self.holder.instance_id,
                "revision": self.holder.revision, "postprocess": self.postprocess_methods()}
