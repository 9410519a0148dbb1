"""The hand-written migrations produce exactly the SQLModel schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import fleet_server.models  # noqa: F401  (registers the tables)
from fleet_server.db import DatabaseError, make_engine, migrate, safe_url

pytestmark = pytest.mark.integration

#: The newest revision; one linear chain (a second head would fail ``migrate``).
HEAD = "0016_telemetry_rollup"


def test_migrated_schema_matches_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)  # idempotent: a restart runs it again
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        tables = set(inspect(engine).get_table_names())
        assert {"device", "model_version", "telemetry", "event", "rollout"} <= tables
        assert {"api_token", "enrollment_token", "audit_log"} <= tables
        assert "lease" in tables and "telemetry_hourly" in tables
    finally:
        engine.dispose()


def test_migration_can_go_down_and_up(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        from alembic import command

        from fleet_server.db import alembic_config

        command.downgrade(alembic_config(engine), "base")
        assert "device" not in inspect(engine).get_table_names()
        migrate(engine)
        assert "device" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_signed_comes_to_mean_verified(database_url: str) -> None:
    """0009: a version stored as ``signed`` whose signature nothing verified (the default
    server, no trusted keys) is no longer signed; downgrading restores both columns."""
    from alembic import command

    from fleet_server.db import alembic_config

    engine = make_engine(database_url)
    config = alembic_config(engine)
    rows = {
        "forged": (True, False, "k1"),
        "verified": (True, True, "k2"),
        "plain": (False, False, None),
    }
    try:
        command.upgrade(config, "0008_audit_aggregate")
        with engine.begin() as conn:
            for version, (signed, verified, key_id) in rows.items():
                conn.execute(
                    text(
                        "INSERT INTO model_version (name, version, format, precision, task, "
                        "sha256, size, signed, created_at, signature_key_id, signature_verified, "
                        "storage_key, manifest) VALUES ('m', :v, 'onnx', 'fp32', 'raw', :sha, 1, "
                        ":signed, CURRENT_TIMESTAMP, :key_id, :verified, :v, '{}')"
                    ),
                    {"v": version, "sha": "0" * 64, "signed": signed, "key_id": key_id,
                     "verified": verified},
                )  # fmt: skip
        migrate(engine)
        with engine.connect() as conn:
            now = dict(conn.execute(text("SELECT version, signed FROM model_version")).all())
        assert now == {"forged": False, "verified": True, "plain": False}
        command.downgrade(config, "0008_audit_aggregate")
        with engine.connect() as conn:
            query = "SELECT version, signed, signature_verified FROM model_version"
            back = {v: (bool(s), bool(sv)) for v, s, sv in conn.execute(text(query)).all()}
        assert back == {v: (s, sv) for v, (s, sv, _) in rows.items()}
    finally:
        engine.dispose()


def test_bad_database_urls() -> None:
    with pytest.raises(DatabaseError):
        make_engine("not a url")
    with pytest.raises(DatabaseError):
        safe_url("::::")
    assert safe_url("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    try:
        with pytest.raises(DatabaseError, match="migration failed"):
            migrate(engine)
    finally:
        engine.dispose()


def test_replicas_migrating_a_fresh_database_at_once_both_start(database_url: str) -> None:
    """Two servers started together on an empty PostgreSQL database: both used to insert
    alembic_version (UniqueViolation, one replica exited: found by the compose stack); the
    migration lock serialises them. Two processes (Alembic's context is per process). SQLite
    is one server's database: not a scale-out setup."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from alembic import command

    from fleet_server.db import alembic_config

    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share PostgreSQL; SQLite is a single server's database")
    engine = make_engine(database_url)
    try:
        migrate(engine)
        command.downgrade(alembic_config(engine), "base")
        code = (
            "import sys; from fleet_server.db import make_engine, migrate; "
            "migrate(make_engine(sys.argv[1]))"
        )
        root = str(Path(__file__).resolve().parents[2])
        procs = [
            subprocess.Popen(  # noqa: S603
                [sys.executable, "-c", code, database_url],
                cwd=root,
                env={**os.environ, "PYTHONPATH": root},
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
        assert [rc for rc, _ in results] == [0, 0], [err[-500:] for _, err in results]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    finally:
        engine.dispose()
