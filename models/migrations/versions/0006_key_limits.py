"""per-key limits: requests per second, open jobs and cells per sweep (null: the service-wide setting)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ("rate_limit_per_s", "max_open_jobs", "max_sweep_cells")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
