"""The queue contract between the API and the workers: task and queue names, priorities, the Celery app factory
(no task registration: workers bind their tasks in worker/tasks.py), and the functions that send a message.
Importing this module never imports torch: the API, the workers' side threads and Flower all use it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import before_task_publish

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


def make_enqueue(app: Celery) -> Enqueue:
    """The one function that sends a render message."""

    def enqueue(job_id: str, model: str, priority: int, countdown: float) -> None:
        app.send_task(RENDER_TASK, args=[job_id], queue=queue_name(model), priority=broker_priority(priority),
                      countdown=countdown or None, task_id=render_task_id(job_id))

    return enqueue


def make_grid_enqueue(app: Celery) -> GridEnqueue:
    """The one function that sends a grid message, ahead of renders on the model's queue."""

    def enqueue_grid(sweep_id: str, image_id: str, model: str) -> None:
        app.send_task(GRID_TASK, args=[sweep_id, image_id], queue=queue_name(model), priority=broker_priority(9))

    return enqueue_grid


def broker_lists(app: Celery, model: str) -> list[str]:
    """The Redis lists that hold a model's waiting messages: kombu's Redis transport keeps each priority step of a
    queue in its own list, `<queue>` for step 0 and `<queue><sep><step>` for the others (kombu's _q_for_pri)."""
    options = app.conf.broker_transport_options or {}
    sep, steps = options.get("sep", "\x06\x16"), options.get("priority_steps", [0, 3, 6, 9])
    queue = queue_name(model)
    return [f"{queue}{sep}{step}" if step else queue for step in steps]


_LABELS: dict[str, Callable[[list[Any], str], str]] = {
    RENDER_TASK: lambda args, model: f"job={args[0]} model={model}",
    GRID_TASK: lambda args, model: f"sweep={args[0]} image={args[1]} model={model}",
}


@before_task_publish.connect(weak=False, dispatch_uid="svdq.flower_labels")  # type: ignore[untyped-decorator]
def _label_for_flower(sender: str | None = None, body: Any = None, routing_key: str | None = None,
                      headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Task events, and so Flower, show a message's argsrepr: name the job and model there, whichever
    process sent it (API, reaper, reconciler), so Flower's search finds a job by its id."""
    label = _LABELS.get(sender or "")
    if label is None or headers is None or not routing_key or not isinstance(body, (tuple, list)):
        return
    headers["argsrepr"] = label(list(body[0]), routing_key.removeprefix(QUEUE_PREFIX))


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
