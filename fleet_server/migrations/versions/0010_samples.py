"""Captured samples and their labels (``sample``), capture policies per model or version
(``capture_policy``) and each device's daily upload budget (``sample_budget``).

Revision ID: 0010_samples
Revises: 0009_signed_means_verified
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_samples"
down_revision = "0009_signed_means_verified"
branch_labels = None
depends_on = None

_INDEXES = {
    "ix_sample_model_version_id": ["model_name", "model_version", "id"],
    "ix_sample_device_id_id": ["device_id", "id"],
    "ix_sample_reason_id": ["reason", "id"],
    "ix_sample_labelled_id": ["labelled", "id"],
    "ix_sample_captured_at": ["captured_at"],
    "ix_sample_received_at": ["received_at"],
    "ix_sample_sha256": ["sha256"],
}


def upgrade() -> None:
    op.create_table(
        "sample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("margin", sa.Float(), nullable=True),
        sa.Column("predicted", sa.String(length=200), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("input_score", sa.Float(), nullable=True),
        sa.Column("input_stats", sa.JSON(), nullable=True),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("labelled", sa.Boolean(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("boxes", sa.JSON(), nullable=True),
        sa.Column("labelled_by", sa.String(length=64), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "sample_id", name="uq_sample_device_sample"),
    )
    for name, columns in _INDEXES.items():
        op.create_index(name, "sample", columns)
    op.create_table(
        "capture_policy",
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "model_version"),
    )
    op.create_table(
        "sample_budget",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("sample_budget")
    op.drop_table("capture_policy")
    for name in _INDEXES:
        op.drop_index(name, table_name="sample")
    op.drop_table("sample")
