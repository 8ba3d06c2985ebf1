"""Session fixtures: the services (Redis, PostgreSQL, S3) and the two stacks, built with ops/harness."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from ops.harness.databases import postgres_database
from ops.harness.services import moto_s3, redis_server
from ops.harness.stack import Stack, build_stack


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.tiny import ensure_tiny

    cache = tmp_path_factory.mktemp("models")
    ensure_tiny(cache)
    return cache


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_cache: Path) -> Iterator[Stack]:
    """SQLite + local results directory, one tiny worker: the embedded-defaults profile."""
    tmp = tmp_path_factory.mktemp("sqlite-stack")
    stack = build_stack(tmp, database_url=f"sqlite:///{tmp}/svdq.db", storage_url=f"file://{tmp}/results",
                        redis_url=f"{redis_url}/1", tiny_cache=tiny_cache, SVDQ_MAX_UPLOAD_BYTES="2000000",
                        SVDQ_ALLOW_PRIVATE_URLS="true", SVDQ_WEBHOOK_BACKOFF_S="0.3")
    stack.start_worker()
    yield stack
    stack.stop()
    stack.client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def pg_s3_stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_cache: Path, pg_url: str,
                s3_endpoint: str) -> Iterator[Stack]:
    """PostgreSQL + S3 (moto over HTTP), one tiny worker: the production profile."""
    tmp = tmp_path_factory.mktemp("pg-stack")
    stack = build_stack(tmp, database_url=pg_url, storage_url="s3://svdq-results/test", redis_url=f"{redis_url}/2",
                        tiny_cache=tiny_cache, s3_endpoint=s3_endpoint)
    stack.start_worker()
    yield stack
    stack.stop()
    stack.client.__exit__(None, None, None)


@pytest.fixture(params=["sqlite_stack", "pg_s3_stack"])
def stack(request: pytest.FixtureRequest) -> Stack:
    s: Stack = request.getfixturevalue(request.param)
    return s
