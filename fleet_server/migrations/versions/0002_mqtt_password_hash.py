"""Devices: the token hashed in Mosquitto's password-file format (for ``edgefleet server acl``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Existing devices get NULL: their tokens are not known (only their SHA-256 is stored), so they
are left out of generated Mosquitto password files until they get a new token
(``POST /api/v1/devices/<id>/token``). The
embedded broker checks tokens against ``token_hash`` and needs no change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("mqtt_password_hash", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.drop_column("mqtt_password_hash")
