"""Audit rows can stand for many refused calls: ``audit_log.source``, ``calls``, ``last_ts`` and
the unique ``aggregate_key`` the aggregated rows are counted up under.

Revision ID: 0008_audit_aggregate
Revises: 0007_drift
Create Date: 2026-12-06

Existing rows each stand for one call (``calls`` 1) from an unrecorded source.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_audit_aggregate"
down_revision = "0007_drift"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("source", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("calls", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch.add_column(sa.Column("last_ts", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("aggregate_key", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_log_aggregate_key", "audit_log", ["aggregate_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_audit_log_aggregate_key", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("aggregate_key")
        batch.drop_column("last_ts")
        batch.drop_column("calls")
        batch.drop_column("source")
