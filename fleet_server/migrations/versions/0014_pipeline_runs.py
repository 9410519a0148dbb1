"""Retraining pipeline runs and their steps (``pipeline_runs``, ``pipeline_steps``); the unique
``active_model`` keeps one unfinished run per model.

Revision ID: 0014_pipeline_runs
Revises: 0011_input_drift_quality
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_pipeline_runs"
down_revision = "0012_shadow_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=63), nullable=False),
        sa.Column("active_model", sa.String(length=63), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=True),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("parent_version", sa.String(length=63), nullable=True),
        sa.Column("candidate_version", sa.String(length=63), nullable=True),
        sa.Column("dataset_sha256", sa.String(length=64), nullable=True),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pipeline_runs_model_name", "pipeline_runs", ["model_name"])
    op.create_index("ix_pipeline_runs_state", "pipeline_runs", ["state"])
    op.create_index("ix_pipeline_runs_active_model", "pipeline_runs", ["active_model"], unique=True)
    op.create_table(
        "pipeline_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.String(length=1000), nullable=False),
        sa.Column("numbers", sa.JSON(), nullable=False),
        sa.Column("log", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["pipeline_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pipeline_steps_run_id", "pipeline_steps", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_pipeline_steps_run_id", table_name="pipeline_steps")
    op.drop_table("pipeline_steps")
    op.drop_index("ix_pipeline_runs_active_model", table_name="pipeline_runs")
    op.drop_index("ix_pipeline_runs_state", table_name="pipeline_runs")
    op.drop_index("ix_pipeline_runs_model_name", table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
