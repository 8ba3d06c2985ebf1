from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from models import tables  # noqa: F401  (registers the tables on Base.metadata)
from models.db import Base, create_db_engine

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connectable = context.config.attributes.get("connection")
if connectable is not None:
    _run(connectable)
else:
    engine = create_db_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
