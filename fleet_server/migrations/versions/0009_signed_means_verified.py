"""``model_version.signed`` means verified against a trusted key; ``signature_verified`` goes.

Until now ``signed`` recorded that the manifest *carried* a signature, and rollouts trusted it:
on a server without trusted keys (the default) a random signature counted as signed (issue #11,
finding 7). ``signed`` now holds what ``signature_verified`` held; that a signature is present at
all stays visible as ``signature_key_id``. Downgrading restores the old meaning.

Revision ID: 0009_signed_means_verified
Revises: 0008_audit_aggregate
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_signed_means_verified"
down_revision = "0008_audit_aggregate"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE model_version SET signed = signature_verified")
    with op.batch_alter_table("model_version") as batch:
        batch.drop_column("signature_verified")


def downgrade() -> None:
    with op.batch_alter_table("model_version") as batch:
        batch.add_column(
            sa.Column("signature_verified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("model_version") as batch:
        batch.alter_column("signature_verified", server_default=None)
    op.execute("UPDATE model_version SET signature_verified = signed")
    op.execute("UPDATE model_version SET signed = (signature_key_id IS NOT NULL)")
