"""live previews per job: false when the job asked for none (preview: false); every job before this had them on

Revision ID: 0009_job_preview
Revises: 0008_job_counters
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_job_preview"
down_revision = "0008_job_counters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("preview", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("preview")
