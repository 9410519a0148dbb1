"""Alembic environment: the engine comes from ``config.attributes['engine']`` (see
``fleet_server.db.alembic_config``); nothing is read from alembic.ini or the cwd."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import fleet_server.models  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


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
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
