"""Engine, sessions and schema migrations; SQLite and PostgreSQL share every line here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DatabaseError(Exception):
    """The database URL is unusable or the schema could not be migrated."""


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and the startup line."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception as err:  # noqa: BLE001 - any parse failure means we print nothing secret
        raise DatabaseError(f"invalid database URL: {type(err).__name__}") from err


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys."""
    try:
        parsed = make_url(url)
    except Exception as err:  # noqa: BLE001
        raise DatabaseError(f"invalid database URL: {type(err).__name__}") from err
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if parsed.get_backend_name() == "postgresql":
        # First among the connect listeners: SQLAlchemy's own first-connect step fails with a
        # TypeError deep in its version check when the server sends bytes (SQL_ASCII).
        event.listen(engine, "connect", _utf8_only, insert=True)
    return engine


def _utf8_only(dbapi_conn: Any, _record: Any) -> None:
    """Refuse a database whose encoding is not UTF8, with one line that says how to make one:
    under SQL_ASCII the driver hands text back as bytes, and device names, JSON and audit rows
    are not ASCII-safe anyway."""
    info = getattr(dbapi_conn, "info", None)
    status = getattr(info, "parameter_status", None)
    encoding = status("server_encoding") if callable(status) else None
    if isinstance(encoding, bytes):
        encoding = encoding.decode("ascii", "replace")
    if encoding is not None and encoding.upper() not in ("UTF8", "UTF-8"):
        name = getattr(info, "dbname", None) or "?"
        raise DatabaseError(
            f"PostgreSQL database {name!r} has encoding {encoding}; EdgeFleet needs UTF8 "
            f"(createdb -E UTF8 -T template0 {name})"
        )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def alembic_config(engine: Engine) -> Any:
    """An Alembic Config built in code (no alembic.ini, no dependence on the cwd)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", "driver://configured-in-code")
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, *, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (idempotent)."""
    from alembic import command
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        command.upgrade(alembic_config(engine), revision)
    except (CommandError, SQLAlchemyError) as err:
        raise DatabaseError(f"database migration failed: {err}") from err
    log.info("database schema is current", extra={"revision": revision})
