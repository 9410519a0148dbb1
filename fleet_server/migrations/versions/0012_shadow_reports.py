"""Shadow models on devices: ``device_shadow`` (the shadow a device should run) and
``shadow_reports`` (its figures per telemetry interval, keyed like telemetry).

Revision ID: 0012_shadow_reports
Revises: 0011_input_drift_quality
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_shadow_reports"
down_revision = "0017_dashboard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_shadow",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("cpu_budget", sa.Float(), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["device.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "shadow_reports",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("paired", sa.BigInteger(), nullable=False),
        sa.Column("skipped", sa.BigInteger(), nullable=False),
        sa.Column("disagreements", sa.BigInteger(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["device.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "seq"),
    )
    op.create_index(
        "ix_shadow_reports_model", "shadow_reports", ["model_name", "model_version", "ts"]
    )


def downgrade() -> None:
    op.drop_index("ix_shadow_reports_model", table_name="shadow_reports")
    op.drop_table("shadow_reports")
    op.drop_table("device_shadow")
