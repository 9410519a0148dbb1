"""Model comparisons: ``model_comparisons`` keeps what ``edgefleet fleet models compare`` found
for a candidate version against a baseline (the version it would replace).

Revision ID: 0013_model_compare
Revises: 0011_input_drift_quality
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_model_compare"
down_revision = "0011_input_drift_quality"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("candidate_version", sa.String(length=63), nullable=False),
        sa.Column("baseline_version", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=False),
        sa.Column("accuracy_delta", sa.Float(), nullable=True),
        sa.Column("latency_ratio", sa.Float(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_model_comparisons_candidate",
        "model_comparisons",
        ["model_name", "candidate_version", "baseline_version"],
    )


def downgrade() -> None:
    op.drop_index("ix_model_comparisons_candidate", table_name="model_comparisons")
    op.drop_table("model_comparisons")
