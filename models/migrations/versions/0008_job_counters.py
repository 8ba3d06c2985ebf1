"""finished-job counters for /metrics, and what result and idempotency-key retention need

- job_counters: jobs that reached each terminal status per model (models/job_counts.py), seeded here from the
  jobs already ended, so the counters carry on from what the old `svdq_jobs` gauge showed;
- jobs.result_expired_at, with an index the retention pass reads in order ((status, finished_at) of the jobs
  whose result is still stored), and one on reused_from (a result stays while a job that reused it is recent);
- an index on idempotency_keys.created_at (expired keys are deleted oldest first), and one on sweep_grids
  (status, updated_at) (composed grids expire oldest first).

Revision ID: 0008_job_counters
Revises: 0007_webhook_events
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_job_counters"
down_revision = "0007_webhook_events"
branch_labels = None
depends_on = None

TERMINAL = ("succeeded", "failed", "canceled")


def upgrade() -> None:
    op.create_table(
        "job_counters",
        sa.Column("model", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("shard", sa.Integer(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    jobs = sa.table("jobs", sa.column("model", sa.String), sa.column("status", sa.String))
    counters = sa.table("job_counters", sa.column("model", sa.String), sa.column("status", sa.String),
                        sa.column("shard", sa.Integer), sa.column("n", sa.BigInteger))
    # the one full count of the jobs table, once, at upgrade; everything after adds to these rows
    op.get_bind().execute(counters.insert().from_select(
        ["model", "status", "shard", "n"],
        sa.select(jobs.c.model, jobs.c.status, sa.literal(0), sa.func.count()).where(jobs.c.status.in_(TERMINAL))
        .group_by(jobs.c.model, jobs.c.status)))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("result_expired_at", sa.DateTime(timezone=True), nullable=True))
    stored = sa.text("result_expired_at IS NULL")
    op.create_index("ix_jobs_result_expiry", "jobs", ["status", "finished_at"], postgresql_where=stored,
                    sqlite_where=stored)
    op.create_index("ix_jobs_reused_from", "jobs", ["reused_from"])
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_index("ix_sweep_grids_status_updated", "sweep_grids", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_sweep_grids_status_updated", "sweep_grids")
    op.drop_index("ix_idempotency_keys_created_at", "idempotency_keys")
    op.drop_index("ix_jobs_reused_from", "jobs")
    op.drop_index("ix_jobs_result_expiry", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("result_expired_at")
    op.drop_table("job_counters")
