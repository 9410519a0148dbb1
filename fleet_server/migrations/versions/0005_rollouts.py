"""Rollouts: the rollout state machine's rows, its devices and its decisions.

Revision ID: 0005_rollouts
Revises: 0004_lease
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_rollouts"
down_revision = "0004_lease"
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "rollout",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.JSON(), nullable=False),
        sa.Column("gates", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        _ts("stage_started_at", nullable=False),
        _ts("stage_finished_at", nullable=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("finished_at", nullable=True),
        sa.Column("last_evaluation", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_state", "rollout", ["state"])
    op.create_table(
        "rollout_device",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("previous_name", sa.String(length=63), nullable=True),
        sa.Column("previous_version", sa.String(length=63), nullable=True),
        sa.Column("device_class", sa.String(length=64), nullable=True),
        sa.Column("joined_late", sa.Boolean(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=True),
        _ts("assigned_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollout.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["device_id"], ["device.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("rollout_id", "device_id"),
    )
    op.create_index("ix_rollout_device_status", "rollout_device", ["status"])
    op.create_table(
        "rollout_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        _ts("ts", nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollout.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_decision_rollout_id", "rollout_decision", ["rollout_id"])


def downgrade() -> None:
    op.drop_table("rollout_decision")
    op.drop_table("rollout_device")
    op.drop_table("rollout")
