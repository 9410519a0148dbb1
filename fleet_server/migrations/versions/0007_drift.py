"""Drift detection: ``drift_bucket``, ``drift_cursor``, ``drift_status``, ``drift_alert``.

Revision ID: 0007_drift
Revises: 0006_enrollment_revoke
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_drift"
down_revision = "0006_enrollment_revoke"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_bucket",
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("intervals", sa.BigInteger(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("confidence_histogram", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "model_version", "bucket_start"),
    )
    op.create_table(
        "drift_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "drift_status",
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("detector", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("reference_samples", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "model_version", "detector"),
    )
    op.create_table(
        "drift_alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("detector", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trigger_status", sa.String(length=16), nullable=False),
        sa.Column("trigger_detail", sa.String(length=1000), nullable=False),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_drift_alert_model_name", "drift_alert", ["model_name"])


def downgrade() -> None:
    op.drop_index("ix_drift_alert_model_name", table_name="drift_alert")
    op.drop_table("drift_alert")
    op.drop_table("drift_status")
    op.drop_table("drift_cursor")
    op.drop_table("drift_bucket")
