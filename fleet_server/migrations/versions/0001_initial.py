"""Initial schema: devices, model versions, telemetry and events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written by hand; ``tests/fleet_server/test_migrations.py`` proves it equals the SQLModel tables
on SQLite and PostgreSQL (autogenerate finds nothing to change).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "device",
        sa.Column("device_class", sa.String(length=64), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        _ts("last_seen", nullable=True),
        _ts("status_ts", nullable=True),
        sa.Column("state_seq", sa.BigInteger(), nullable=True),
        sa.Column("phase", sa.String(length=32), nullable=True),
        sa.Column("running_name", sa.String(length=63), nullable=True),
        sa.Column("running_version", sa.String(length=63), nullable=True),
        sa.Column("reported_desired_name", sa.String(length=63), nullable=True),
        sa.Column("reported_desired_version", sa.String(length=63), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("telemetry_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_telemetry", sa.JSON(), nullable=True),
        sa.Column("desired_name", sa.String(length=63), nullable=True),
        sa.Column("desired_version", sa.String(length=63), nullable=True),
        sa.Column("desired_revision", sa.BigInteger(), nullable=False),
        _ts("desired_at", nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "model_version",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=63), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("precision", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("signed", sa.Boolean(), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("signature_key_id", sa.String(length=64), nullable=True),
        sa.Column("signature_value", sa.String(length=200), nullable=True),
        sa.Column("signature_verified", sa.Boolean(), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_table(
        "event",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _ts("ts", nullable=False),
        _ts("received_at", nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("model", sa.JSON(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("detail", sa.String(length=2000), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["device.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "seq"),
    )
    op.create_table(
        "telemetry",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _ts("ts", nullable=False),
        _ts("received_at", nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("model", sa.JSON(), nullable=True),
        sa.Column("inference_count", sa.BigInteger(), nullable=False),
        sa.Column("error_count", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.JSON(), nullable=True),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.Column("system", sa.JSON(), nullable=False),
        sa.Column("confidence_histogram", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["device.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("telemetry")
    op.drop_table("event")
    op.drop_table("model_version")
    op.drop_table("device")
