"""Alembic environment: the engine comes from ``config.attributes['engine']`` (see
``fleet_server.db.alembic_config``); nothing is read from alembic.ini or the cwd."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import fleet_server.models  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


#: The PostgreSQL advisory lock key migrations hold (an arbitrary constant: "EdgeFleet").
MIGRATION_LOCK = 0x45646765466C74


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Replicas starting together on a fresh database raced on alembic_version
                # (UniqueViolation; found by the compose stack): the first takes this lock for
                # its transaction, the others wait and then find the schema current.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
