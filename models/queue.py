"""The queue contract between the API and the workers: task and queue names, priorities, the Celery app factory
(no task registration: workers bind their tasks in worker/tasks.py), and the functions that send a message.
Importing this module never imports torch: the API, the workers' side threads and Flower all use it."""

from __future__ import annotations

import base64
import bisect
import json
import uuid
from collections.abc import Callable
from typing import Any, cast

import redis
from celery import Celery
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from models.settings import Settings

RENDER_TASK = "svdq.render"
GRID_TASK = "svdq.grid"
QUEUE_PREFIX = "render."  # one queue per model

# (job_id, model, priority, countdown_s) -> a render message on the model's queue
Enqueue = Callable[[str, str, int, float], None]
# (sweep_id, image_id, model) -> a grid message on the model's queue
GridEnqueue = Callable[[str, str, str], None]


def queue_name(model: str) -> str:
    return QUEUE_PREFIX + model


def broker_priority(priority: int) -> int:
    # kombu's Redis transport serves priority 0 first; the API's 9 is the most urgent
    return 9 - priority


def render_task_id(job_id: str) -> str:
    """A render message's id names its job, so Celery's own log lines ("Task ... received") name it too and carry
    its job_id (models.logs); the suffix keeps each send's id unique (a job may be sent again)."""
    return f"{job_id}.{uuid.uuid4().hex[:12]}"


# a message's argsrepr, which task events and so Flower show: the job (or sweep and image) and the model, whichever
# process sent it (API, reaper, reconciler), so Flower's search finds a job by its id
_LABELS: dict[str, Callable[[list[Any], str], str]] = {
    RENDER_TASK: lambda args, model: f"job={args[0]} model={model}",
    GRID_TASK: lambda args, model: f"sweep={args[0]} image={args[1]} model={model}",
}


class BrokerWriter:
    """Sends Celery's messages by writing them where kombu's Redis transport keeps them: Celery builds the message
    (`amqp.as_task_v2`: its headers, body and ids, as `send_task` would), this writes kombu's envelope for it and
    LPUSHes it onto the queue's list for its priority, one round trip. `send_task` costs about five times as much
    for the same bytes: a producer from the pool, the publish wrapper, serialisation through kombu's registry.
    tests/test_queue_contract.py checks the envelope against what kombu itself writes, and every render in the
    suite is consumed from it by a real Celery worker. A refused write is retried as Celery's publish policy says
    (task_publish_retry_policy), then raised."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        options = app.conf.broker_transport_options or {}
        self.sep, self.steps = options.get("sep", "\x06\x16"), sorted(options.get("priority_steps", [0, 3, 6, 9]))
        policy = app.conf.task_publish_retry_policy or {}
        retries = policy.get("max_retries", 3) if app.conf.task_publish_retry else 0
        backoff = ExponentialBackoff(cap=float(policy.get("interval_max", 1)),
                                     base=float(policy.get("interval_start", 0) or 0.2))
        redis_broker = str(app.conf.broker_url).split("://", 1)[0] in ("redis", "rediss", "unix")
        # any other broker (tests use memory://) is sent to through Celery itself, labels and all
        self.client = None if not redis_broker else redis.Redis.from_url(
            app.conf.broker_url, socket_connect_timeout=options.get("socket_connect_timeout", 5), socket_timeout=5,
            retry=Retry(backoff, retries), retry_on_error=[redis.ConnectionError, redis.TimeoutError])

    def list_for(self, queue: str, priority: int) -> str:
        """kombu's _q_for_pri: the list of the step at or below `priority` (0 is the queue's own name)."""
        step = self.steps[max(bisect.bisect(self.steps, max(0, min(9, priority))) - 1, 0)]
        return f"{queue}{self.sep}{step}" if step else queue

    def envelope(self, name: str, args: list[Any], *, task_id: str, queue: str, priority: int,
                 countdown: float | None) -> dict[str, Any]:
        label = _LABELS[name](args, queue.removeprefix(QUEUE_PREFIX))
        message = self.app.amqp.as_task_v2(task_id, name, args, {}, countdown=countdown, reply_to=self.app.thread_oid,
                                           argsrepr=label, ignore_result=None)
        body = json.dumps(message.body).encode()
        return {"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
                "content-type": "application/json", "headers": message.headers,
                "properties": {**message.properties, "delivery_mode": 2,
                               "delivery_info": {"exchange": "", "routing_key": queue}, "priority": priority,
                               "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}}

    def send(self, name: str, args: list[Any], *, task_id: str, queue: str, priority: int,
             countdown: float | None = None) -> None:
        if self.client is None:
            self.app.send_task(name, args=args, task_id=task_id, queue=queue, priority=priority, countdown=countdown,
                               argsrepr=_LABELS[name](args, queue.removeprefix(QUEUE_PREFIX)))
            return
        message = self.envelope(name, args, task_id=task_id, queue=queue, priority=priority, countdown=countdown)
        self.client.lpush(self.list_for(queue, priority), json.dumps(message))


def broker_writer(app: Celery) -> BrokerWriter:
    """The app's one writer (its Redis connection pool is shared by every thread that sends)."""
    writer = app.__dict__.get("_svdq_writer")
    if writer is None:
        writer = app.__dict__["_svdq_writer"] = BrokerWriter(app)
    return cast(BrokerWriter, writer)


def make_enqueue(app: Celery) -> Enqueue:
    """The one function that sends a render message."""
    writer = broker_writer(app)

    def enqueue(job_id: str, model: str, priority: int, countdown: float) -> None:
        writer.send(RENDER_TASK, [job_id], task_id=render_task_id(job_id), queue=queue_name(model),
                    priority=broker_priority(priority), countdown=countdown or None)

    return enqueue


def make_grid_enqueue(app: Celery) -> GridEnqueue:
    """The one function that sends a grid message, ahead of renders on the model's queue."""
    writer = broker_writer(app)

    def enqueue_grid(sweep_id: str, image_id: str, model: str) -> None:
        writer.send(GRID_TASK, [sweep_id, image_id], task_id=str(uuid.uuid4()), queue=queue_name(model),
                    priority=broker_priority(9))

    return enqueue_grid


def broker_lists(app: Celery, model: str) -> list[str]:
    """The Redis lists that hold a model's waiting messages: kombu's Redis transport keeps each priority step of a
    queue in its own list, `<queue>` for step 0 and `<queue><sep><step>` for the others (kombu's _q_for_pri)."""
    options = app.conf.broker_transport_options or {}
    sep, steps = options.get("sep", "\x06\x16"), options.get("priority_steps", [0, 3, 6, 9])
    queue = queue_name(model)
    return [f"{queue}{sep}{step}" if step else queue for step in steps]


def create_celery(settings: Settings) -> Celery:
    """The Celery app every process role builds from settings: the API and the maintenance pass send with it,
    a worker binds its tasks to it, Flower watches through it."""
    if not settings.redis_url:
        raise ValueError("SVDQ_REDIS_URL is not set; `svdq dev` starts a private redis-server for you")
    app = Celery("svdq", broker=settings.redis_url, set_as_current=False)
    transport = {
        # above the longest render, so Redis never hands a running job to a second worker
        "visibility_timeout": settings.visibility_timeout_s,
        "queue_order_strategy": "priority",
        "priority_steps": list(range(10)),
        "sep": ":",
        "socket_connect_timeout": 5,
    }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        worker_send_task_events=True,
        # no "task-sent" event: it would double every submit's publish; Flower sees received/started/succeeded
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return app
