"""The engine a SQLite URL gets: WAL, foreign keys and a busy timeout on every pooled
connection."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from fleet_server.db import make_engine


def test_every_sqlite_connection_gets_the_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'server' / 'edgefleet.db'}")
    try:
        # Two at once: the second is a new pooled connection, which gets them too.
        with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
                assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    finally:
        engine.dispose()
