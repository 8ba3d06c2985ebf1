"""lifecycle: cancel requests, result reuse, reruns, idempotency keys

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        b.add_column(sa.Column("reused_from", sa.String(40), nullable=True))
        b.add_column(sa.Column("rerun_of", sa.String(40), nullable=True))
        b.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_fingerprint", "jobs", ["fingerprint"])
    op.create_index("ix_jobs_queue", "jobs", ["model", "status", "priority", "created_at"])
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("api_keys.id"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_index("ix_jobs_queue", "jobs")
    op.drop_index("ix_jobs_fingerprint", "jobs")
    with op.batch_alter_table("jobs") as b:
        for col in ("not_before", "rerun_of", "reused_from", "fingerprint", "cancel_requested_at"):
            b.drop_column(col)
