"""webhooks: per-key signing secrets, sweep webhook urls, the delivery log

Revision ID: 0004
Revises: 0003
"""

import base64
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as b:
        b.add_column(sa.Column("webhook_secret", sa.String(80), nullable=True))
    keys = sa.table("api_keys", sa.column("id", sa.String), sa.column("webhook_secret", sa.String))
    bind = op.get_bind()
    for (key_id,) in bind.execute(sa.select(keys.c.id)).all():  # keys made before webhooks get a secret too
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        bind.execute(keys.update().where(keys.c.id == key_id).values(webhook_secret=secret))
    with op.batch_alter_table("sweeps") as b:
        b.add_column(sa.Column("webhook_url", sa.Text(), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("resource_id", sa.String(40), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_resource_id", "webhook_deliveries", ["resource_id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("sweeps") as b:
        b.drop_column("webhook_url")
    with op.batch_alter_table("api_keys") as b:
        b.drop_column("webhook_secret")
