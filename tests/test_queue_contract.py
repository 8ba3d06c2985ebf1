"""The lean enqueue (models.queue.BrokerWriter) writes what Celery's send_task, through kombu's Redis transport,
writes for the same task: the same list for each priority, the same envelope and headers (ids, timestamps and
the sending process's names aside), a body Celery decodes to the same call; and it gives up on a dead broker
within Celery's publish retry policy."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import redis

from models.queue import (
    GRID_TASK,
    RENDER_TASK,
    broker_priority,
    broker_writer,
    create_celery,
    make_enqueue,
    make_grid_enqueue,
    queue_name,
)
from models.settings import Settings
from ops.harness.services import free_port, redis_server

# differ on every send, or name the sending process (its host, pid and per-thread reply queue); argsrepr is
# the label send_task leaves to the caller (["job_a"]), which the writer sets for Flower
VARYING = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to", "origin", "eta", "argsrepr"}


def settled(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if k not in ("headers", "properties")}
    out["headers"] = {k: (k in VARYING and v is not None) or v for k, v in message["headers"].items()}
    out["properties"] = {k: (k in VARYING and v is not None) or v for k, v in message["properties"].items()}
    return out


def drain(client: redis.Redis) -> dict[str, list[dict[str, Any]]]:  # type: ignore[type-arg]
    lists = {k.decode(): [json.loads(m) for m in client.lrange(k, 0, -1)] for k in client.keys("render.*")
             if client.type(k) == b"list"}
    client.flushdb()
    return lists


@pytest.mark.parametrize("priority, countdown", [(5, 0.0), (9, 0.0), (0, 0.0), (7, 3.5)])
def test_the_lean_enqueue_writes_what_send_task_writes(priority: int, countdown: float) -> None:
    with redis_server() as url:
        app = create_celery(Settings(_env_file=None, redis_url=url + "/0", database_url="sqlite://"))
        client = redis.Redis.from_url(url + "/0")
        # Given the message Celery itself sends for a render
        app.send_task(RENDER_TASK, args=["job_a"], queue=queue_name("svd"), priority=broker_priority(priority),
                      countdown=countdown or None, task_id="job_a.000000000000")
        theirs = drain(client)
        # When the lean enqueue sends the same
        make_enqueue(app)("job_a", "svd", priority, countdown)
        ours = drain(client)
    # Then it lands on the same list, as the same envelope
    assert list(ours) == list(theirs) and len(list(ours)) == 1
    ((mine,),), ((celerys,),) = ours.values(), theirs.values()
    assert settled(mine) == settled(celerys)
    assert mine["headers"]["argsrepr"] == "job=job_a model=svd"  # Flower's label
    assert mine["headers"]["id"] == mine["headers"]["root_id"] == mine["properties"]["correlation_id"]
    assert mine["headers"]["id"].startswith("job_a.")
    assert (mine["headers"]["eta"] is None) == (countdown == 0)
    # and the body decodes to the same call: args, kwargs, embed
    decode = lambda m: json.loads(base64.b64decode(m["body"]))  # noqa: E731
    assert decode(mine) == decode(celerys) == [["job_a"], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                                               "chord": None}]


def test_a_grid_message_goes_on_the_list_served_first() -> None:
    with redis_server() as url:
        app = create_celery(Settings(_env_file=None, redis_url=url + "/0", database_url="sqlite://"))
        client = redis.Redis.from_url(url + "/0")
        make_enqueue(app)("job_b", "svd", 5, 0.0)
        make_grid_enqueue(app)("swp_1", "img_1", "svd")
        lists = drain(client)
    # kombu's priority order serves `render.svd` (step 0: the API's priority 9) before any `render.svd:<n>`
    assert {k: [m["headers"]["task"] for m in v] for k, v in lists.items()} == {
        "render.svd": [GRID_TASK], "render.svd:4": [RENDER_TASK]}
    assert lists["render.svd"][0]["headers"]["argsrepr"] == "sweep=swp_1 image=img_1 model=svd"


def test_a_dead_broker_fails_the_send_within_the_retry_policy() -> None:
    app = create_celery(Settings(_env_file=None, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                                 database_url="sqlite://"))
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        make_enqueue(app)("job_c", "svd", 5, 0.0)
    # two retries, 0.2 s then at most 1 s apart (task_publish_retry_policy): refused fast, not hung
    assert time.monotonic() - started < 5
    assert broker_writer(app) is broker_writer(app)  # one writer, one connection pool per app


def test_another_broker_is_sent_to_through_celery_with_the_same_labels() -> None:
    from celery import Celery
    from celery.signals import before_task_publish

    app = Celery("t", broker="memory://", set_as_current=False)
    seen: list[tuple[str, str]] = []

    def record(sender: str | None = None, headers: dict[str, Any] | None = None, routing_key: str = "",
               **_: Any) -> None:
        seen.append((routing_key, (headers or {}).get("argsrepr", "")))

    before_task_publish.connect(record, weak=False)
    try:
        make_enqueue(app)("job_d", "tiny", 5, 0.0)
    finally:
        before_task_publish.disconnect(record)
    assert broker_writer(app).client is None
    assert seen == [("render.tiny", "job=job_d model=tiny")]
