"""sweeps, their comparison grids, and each job's cell in its sweep

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("model", sa.String(40), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("canceled_at", TS, nullable=True),
    )
    op.create_index("ix_sweeps_owner_id", "sweeps", ["owner_id"])
    op.create_table(
        "sweep_grids",
        sa.Column("sweep_id", sa.String(40), sa.ForeignKey("sweeps.id"), primary_key=True),
        sa.Column("image_id", sa.String(40), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("video_key", sa.String(300), nullable=True),
        sa.Column("poster_key", sa.String(300), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("sweep_cell", sa.JSON(), nullable=True))
        b.add_column(sa.Column("sweep_index", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.drop_column("sweep_index")
        b.drop_column("sweep_cell")
    op.drop_table("sweep_grids")
    op.drop_table("sweeps")
