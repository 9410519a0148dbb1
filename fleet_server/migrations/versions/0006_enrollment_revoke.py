"""Enrollment tokens can be revoked: ``enrollment_token.revoked_at``.

Revision ID: 0006_enrollment_revoke
Revises: 0005_rollouts
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_enrollment_revoke"
down_revision = "0005_rollouts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollment_token") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollment_token") as batch:
        batch.drop_column("revoked_at")
