"""webhook event filters: which events a job's (or a sweep's) webhook gets (null: the default, completed only)

Revision ID: 0007_webhook_events
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_webhook_events"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("jobs", "sweeps")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("webhook_events", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("webhook_events")
