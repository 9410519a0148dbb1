"""Device and token lifecycles: ``device.decommissioned_at`` (a removed device keeps its row
and history for the audit) and ``api_token.expires_at`` (refused after it).

Revision ID: 0015_device_lifecycle
Revises: 0014_pipeline_runs
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_device_lifecycle"
down_revision = "0014_pipeline_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("decommissioned_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_token") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("device") as batch:
        batch.drop_column("decommissioned_at")
