"""What the lean create keeps while costing less: with its key and image known, a create writes its job in one
autocommitted statement (no BEGIN or COMMIT round trips) and the row is there for any reader at once; the queue
index answers the job's place in the same round trip as it takes it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis as redis_lib
from sqlalchemy import delete, event, select

from models.db import create_db_engine, create_session_factory
from models.events import JobSignals, queue_key
from models.tables import Job, utcnow
from ops.harness.stack import Stack


class Statements:
    """Every statement and every COMMIT an engine sends while it listens."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.sql, self.commits = engine, [], 0

    def _stmt(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.sql.append(statement.split(None, 3)[:3])

    def _commit(self, _conn: Any) -> None:
        self.commits += 1

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._stmt)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._stmt)
        event.remove(self.engine, "commit", self._commit)


def test_a_create_with_its_key_and_image_known_is_one_autocommitted_insert(stack: Stack) -> None:
    # Given a key and an image this API process has seen (model svd: no worker here takes its jobs)
    image_id = stack.upload()["id"]
    body = {"image_id": image_id, "model": "svd", "reuse": False}
    made = [stack.submit(**body)["id"]]
    engine = stack.client.app.state.svdq.engine  # type: ignore[attr-defined]
    readers = create_session_factory(create_db_engine(stack.settings.database_url))
    try:
        # When it creates another job
        with Statements(engine) as seen:
            job = stack.submit(**body)
        made.append(job["id"])
        # Then the database saw one INSERT and no transaction around it
        assert seen.sql == [["INSERT", "INTO", "jobs"]] and seen.commits == 0
        # and the row is committed: another connection reads it at once, with the place the answer gave
        with readers() as s:
            row = s.scalars(select(Job).where(Job.id == job["id"])).one()
        assert (row.status, row.model, row.params["seed"]) == ("queued", "svd", job["params"]["seed"])
        assert isinstance(job["queue_position"], int) and job["queue_position"] >= 1  # behind the first one
        assert stack.client.get(f"/v1/jobs/{job['id']}", headers=stack.headers).json()["queue_position"] == \
            job["queue_position"]
    finally:
        with readers() as s:
            s.execute(delete(Job).where(Job.id.in_(made)))
            s.commit()
        r = redis_lib.Redis.from_url(stack.settings.redis_url or "")
        r.zrem(queue_key("svd"), *made)
        r.close()


def test_the_queue_index_answers_the_place_a_job_took(redis_url: str) -> None:
    r = redis_lib.Redis.from_url(f"{redis_url}/5")
    r.flushdb()
    signals = JobSignals(r)
    now = utcnow()
    try:
        assert signals.queued("tiny", "job_a", 5, now) == 0
        assert signals.queued("tiny", "job_b", 5, now + timedelta(seconds=1)) == 1  # behind the older one
        assert signals.queued("tiny", "job_c", 8, now + timedelta(seconds=2)) == 0  # higher priority goes first
        assert signals.position("tiny", "job_a") == 1
        assert JobSignals(None).queued("tiny", "job_d", 5, now) is None
        dead = JobSignals(redis_lib.Redis(port=1, socket_connect_timeout=0.2))
        assert dead.queued("tiny", "job_e", 5, now) is None  # Redis away: unknown, not an error
    finally:
        r.flushdb()
        r.close()
