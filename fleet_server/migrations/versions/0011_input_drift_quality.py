"""Input drift: telemetry keeps ``inputs`` and ``class_counts``; ``drift_input_bucket`` sums them
per model version, segment (fleet, device class, tag) and bucket; detector names grow to 96
characters (``input_psi[class=pi4]``); an alert records in ``detail`` what fired and why.

Revision ID: 0011_input_drift_quality
Revises: 0010_samples
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_input_drift_quality"
down_revision = "0010_samples"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("telemetry") as batch:
        batch.add_column(sa.Column("inputs", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("class_counts", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    op.create_table(
        "drift_input_bucket",
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=63), nullable=False),
        sa.Column("segment", sa.String(length=72), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("input_samples", sa.BigInteger(), nullable=False),
        sa.Column("outside_reference", sa.BigInteger(), nullable=False),
        sa.Column("input_histograms", sa.JSON(), nullable=False),
        sa.Column("class_counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "model_version", "segment", "bucket_start"),
    )
    for table in ("drift_status", "drift_alert"):
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "detector", type_=sa.String(length=96), existing_type=sa.String(length=32)
            )
            if table == "drift_alert":
                batch.add_column(
                    sa.Column("detail", sa.String(length=500), nullable=False, server_default="")
                )


def downgrade() -> None:
    op.execute("DELETE FROM drift_status WHERE length(detector) > 32")
    op.execute("DELETE FROM drift_alert WHERE length(detector) > 32")
    for table in ("drift_alert", "drift_status"):
        with op.batch_alter_table(table) as batch:
            if table == "drift_alert":
                batch.drop_column("detail")
            batch.alter_column(
                "detector", type_=sa.String(length=32), existing_type=sa.String(length=96)
            )
    op.drop_table("drift_input_bucket")
    with op.batch_alter_table("telemetry") as batch:
        batch.drop_column("class_counts")
        batch.drop_column("inputs")
