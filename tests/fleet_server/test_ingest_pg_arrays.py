"""PostgreSQL's array statements (``ingest_pg_statements="arrays"``) store exactly what the
per-row executemany stores: the same batch, hostile text included, through both statement sets
into two databases, then every stored column compared."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from edgefleet.contract import Event, Payload, ShadowReport, State, Status, Telemetry
from edgefleet.contract.base import decoding
from fleet_server.db import make_engine, migrate
from fleet_server.messaging import pg_arrays
from fleet_server.messaging.statements import STATEMENTS, StatementsName, statements_for
from fleet_server.messaging.writes import WriteResult, write_batch
from fleet_server.models import Device
from tests.conftest import fresh_postgres_database

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEVICES = ("pi-0", "pi-1", "pi-2")
#: Text that breaks naive array literals, JSON or SQL quoting (NUL is refused before the write).
HOSTILE = 'a "quoted", {braced} \\back\\slashed\' NULL ,;\n\t… 🚀 ' + "x" * 300


def _engine(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    with Session(engine) as session:
        for i, device in enumerate(DEVICES):
            session.add(Device(device_id=device, token_hash=f"{i:064x}"))
        session.commit()
    return engine


@pytest.fixture
def engines() -> Iterator[dict[StatementsName, Engine]]:
    with fresh_postgres_database() as a, fresh_postgres_database() as b:
        pair: dict[StatementsName, Engine] = {"executemany": _engine(a), "arrays": _engine(b)}
        try:
            yield pair
        finally:
            for engine in pair.values():
                engine.dispose()


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds, milliseconds=5)


def _batch() -> list[tuple[Payload, datetime]]:
    shadow = ShadowReport.model_validate(
        {
            "model": {"name": "digits", "version": "2.0.0"},
            "paired": 40,
            "skipped": 2,
            "disagreements": 3,
            "serving_cpu_ms": 10.0,
            "shadow_cpu_ms": 20.5,
        }
    )
    items: list[tuple[Payload, datetime]] = []
    for seq in range(1, 61):
        device = DEVICES[seq % 3]
        fields: dict[str, Any] = {"interval_s": 10, "model": None, "inference_count": seq}
        if seq % 4 == 0:
            fields.update(
                model={"name": "digits", "version": "1.0.0"},
                latency_ms={"p50": 1.5, "p95": 3.25},
                errors={HOSTILE[:60]: 2, "decode": 1},
                system={"cpu_percent": 12.5, "rss_mb": 80},
                confidence_histogram=[0, 1, 2**40],
                class_counts={"7": 3, HOSTILE[:40]: 1},
                dropped=2**62,
            )
        if seq % 10 == 0:
            fields["shadow"] = shadow
        items.append(
            (
                Telemetry(device_id=device, seq=seq, ts=T0 + timedelta(seconds=seq), **fields),
                _at(seq),
            )
        )
    items += [
        (Event(device_id="pi-1", seq=1, event="update.failed", model=None, detail=HOSTILE),
         _at(61)),
        (
            Event(
                device_id="pi-2",
                seq=2,
                event="update.downloading",
                model={"name": "digits", "version": "2.0.0"},
                progress=0.5,
            ),
            _at(62),
        ),
        (State(device_id="pi-0", seq=3, phase="failed", agent_version="1.0",
               last_error=HOSTILE), _at(63)),
        (State(device_id="pi-1", seq=4, phase="serving", agent_version=HOSTILE[:64],
               device_class="pi4"), _at(64)),
        (Status(device_id="pi-2", status="online", ts=T0 + timedelta(seconds=65)), _at(65)),
        (_redelivered := (Telemetry(device_id="pi-1", seq=1, interval_s=10, model=None,
                                    inference_count=1, ts=T0 + timedelta(seconds=1)), _at(66))),
    ]  # fmt: skip
    assert _redelivered[0].device_id == DEVICES[1 % 3]  # the same key as seq 1 above
    return items


def _dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    tables = {
        "telemetry": "SELECT * FROM telemetry ORDER BY device_id, seq",
        "event": "SELECT * FROM event ORDER BY device_id, seq",
        "shadow_reports": "SELECT * FROM shadow_reports ORDER BY device_id, seq",
        # JSON as stored text, not parsed: the two paths must send the same JSON text.
        "device": "SELECT device_id, online, last_seen, status_ts, state_seq, phase, "
        "running_name, agent_version, last_error, telemetry_seq, last_telemetry::text, "
        "device_class FROM device ORDER BY device_id",
        "json_text": "SELECT model::text, errors::text, latency_ms::text, system::text, "
        "confidence_histogram::text, inputs::text, class_counts::text "
        "FROM telemetry ORDER BY device_id, seq",
    }
    with engine.connect() as conn:
        return {name: [tuple(r) for r in conn.execute(text(sql))] for name, sql in tables.items()}


def test_arrays_store_what_executemany_stores(engines: dict[StatementsName, Engine]) -> None:
    batch = _batch()  # one batch (defaulted timestamps and all) for both
    results = {
        name: write_batch(engine=engine, items=batch, statements=name)
        for name, engine in engines.items()
    }
    assert results["arrays"] == results["executemany"]
    assert results["arrays"] == WriteResult(stored=65, duplicates=1, unknown_devices=0)
    # A redelivery of the whole batch: nothing new stored, every message a duplicate but the
    # status (received at the same time as the applied one: applied again).
    again = {
        name: write_batch(engine=engine, items=batch, statements=name)
        for name, engine in engines.items()
    }
    assert again["arrays"] == again["executemany"]
    assert again["arrays"] == WriteResult(stored=1, duplicates=65, unknown_devices=0)
    old, new = _dump(engines["executemany"]), _dump(engines["arrays"])
    assert len(new["telemetry"]) == 60 and len(new["event"]) == 2
    assert len(new["shadow_reports"]) == 6
    for table in old:
        assert new[table] == old[table], table
    # Values that a naive array literal or JSON encoder would have mangled came back whole.
    with engines["arrays"].connect() as conn:
        detail = conn.execute(text("SELECT detail FROM event WHERE seq = 1")).scalar_one()
        error = conn.execute(text("SELECT last_error FROM device WHERE device_id = 'pi-0'"))
        dropped = conn.execute(text("SELECT max(dropped) FROM telemetry")).scalar_one()
        nulls = conn.execute(
            text("SELECT count(*) FROM telemetry WHERE model IS NULL")
        ).scalar_one()
    assert detail == HOSTILE and error.scalar_one() == HOSTILE
    assert dropped == 2**62
    assert nulls == 0, "None is stored as JSON null, as sa.JSON stores it, not SQL NULL"


def test_a_refused_row_fails_the_array_statement(engines: dict[StatementsName, Engine]) -> None:
    """The database still refuses what it refuses (the writer then bisects the batch): a value
    past a column's limit fails the whole statement and stores nothing of it."""
    engine = engines["arrays"]
    with decoding():  # built as decode builds it (no re-validation): past the contract's check
        too_long = Event(
            device_id="pi-1", seq=9, event="update.failed", model=None, detail="y" * 2001
        )
    with pytest.raises(Exception, match="too long"):
        write_batch(engine=engine, items=[(too_long, _at(1))], statements="arrays")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM event")).scalar_one() == 0


def test_sqlite_always_uses_executemany(tmp_path: Any) -> None:
    assert statements_for("sqlite", "arrays") is STATEMENTS["executemany"]
    assert statements_for("postgresql", "arrays") is STATEMENTS["arrays"]
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        with engine.connect() as conn, pytest.raises(ValueError, match="need PostgreSQL"):
            pg_arrays.insert_new(conn=conn, table=Device.__table__, rows=[{"device_id": "x"}])  # type: ignore[arg-type]
    finally:
        engine.dispose()
