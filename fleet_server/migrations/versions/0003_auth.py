"""Operator API tokens with roles, the audit log, enrollment tokens, device pins, model lineage.

Revision ID: 0003_auth
Revises: 0002
Create Date: 2026-11-23

Every new column is nullable (or a new table): existing devices are unpinned and existing model
versions have no recorded lineage.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_auth"
down_revision = "0002"
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        _ts("revoked_at", nullable=True),
        _ts("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "enrollment_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("device_class", sa.String(length=64), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        _ts("expires_at", nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("ts", nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("pinned_name", sa.String(length=63), nullable=True))
        batch.add_column(sa.Column("pinned_version", sa.String(length=63), nullable=True))
    with op.batch_alter_table("model_version") as batch:
        batch.add_column(sa.Column("parent_version", sa.String(length=63), nullable=True))
        batch.add_column(sa.Column("dataset_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("training_ref", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("converter_report", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_version") as batch:
        batch.drop_column("converter_report")
        batch.drop_column("training_ref")
        batch.drop_column("dataset_sha256")
        batch.drop_column("parent_version")
    with op.batch_alter_table("device") as batch:
        batch.drop_column("pinned_version")
        batch.drop_column("pinned_name")
    op.drop_index("ix_audit_log_actor", table_name="audit_log")
    op.drop_index("ix_audit_log_ts", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("enrollment_token")
    op.drop_table("api_token")
