"""Telemetry roll-up for the dashboard's long charts: ``telemetry_rollup`` (sums per 5-minute
bucket of server time, model, version and device class) and ``telemetry_rollup_mark`` (how far
it has gone). A week's chart reads ~2,000 rows per version instead of millions
(bench/charts_bench.py).

Revision ID: 0016_telemetry_rollup
Revises: 0015_device_lifecycle
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_telemetry_rollup"
down_revision = "0015_device_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_rollup",
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("bucket_s", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("device_class", sa.String(length=64), nullable=False),
        sa.Column("intervals", sa.BigInteger(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("p95_sum", sa.Float(), nullable=True),
        sa.Column("p95_count", sa.BigInteger(), nullable=False),
        sa.Column("p95_max", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("model_name", "bucket_s", "model_version", "device_class"),
    )
    op.create_table(
        "telemetry_rollup_mark",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("until_s", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("telemetry_rollup_mark")
    op.drop_table("telemetry_rollup")
