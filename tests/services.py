"""Moved to ops/harness (services, databases, proxy); this re-export goes once the tests import from there."""

from ops.harness.databases import databases_named, postgres_database
from ops.harness.proxy import TcpProxy
from ops.harness.services import (
    IN_CI,
    PG_ADMIN_URL,
    RedisProcess,
    moto_s3,
    redis_server,
    require_postgres,
    require_redis_server,
    unavailable,
)

__all__ = ["IN_CI", "PG_ADMIN_URL", "RedisProcess", "TcpProxy", "databases_named", "moto_s3", "postgres_database",
           "redis_server", "require_postgres", "require_redis_server", "unavailable"]
