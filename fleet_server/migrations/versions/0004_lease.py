"""Scale-out: the ``lease`` table (one rollout driver among replicas) and ``telemetry_hourly``
(raw telemetry rolled up by the retention job).

Revision ID: 0004_lease
Revises: 0003_auth
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_lease"
down_revision = "0003_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "telemetry_hourly",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("inference_count", sa.BigInteger(), nullable=False),
        sa.Column("error_count", sa.BigInteger(), nullable=False),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.Column("latency_p50_mean", sa.Float(), nullable=True),
        sa.Column("latency_p50_samples", sa.BigInteger(), nullable=False),
        sa.Column("latency_p95_max", sa.Float(), nullable=True),
        sa.Column("latency_p99_max", sa.Float(), nullable=True),
        sa.Column("confidence_histogram", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["device.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "hour", "model_name", "model_version"),
    )


def downgrade() -> None:
    op.drop_table("telemetry_hourly")
    op.drop_table("lease")
