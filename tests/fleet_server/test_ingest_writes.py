"""One mixed ingest batch through ``write_batch``: counts, stored rows and device rows, the same
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from edgefleet.contract import Event, Payload, State, Status, Telemetry
from fleet_server.db import make_engine, migrate
from fleet_server.messaging.writes import WriteResult, write_batch
from fleet_server.models import Device, EventRow, TelemetryRow

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    with Session(engine) as session:
        for i in range(2):
            session.add(Device(device_id=f"pi-{i}", token_hash=f"{i:064x}"))
        session.commit()
    try:
        yield engine
    finally:
        engine.dispose()


def _telemetry(device_id: str, seq: int, **fields: object) -> Telemetry:
    values: dict[str, object] = {"interval_s": 10, "model": None, "inference_count": seq}
    values.update(fields)
    return Telemetry(device_id=device_id, seq=seq, ts=T0 + timedelta(seconds=seq), **values)


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds, milliseconds=5)


def test_mixed_batch_counts_and_stores(engine: Engine) -> None:
    rich = _telemetry(
        "pi-0",
        7,
        model={"name": "digits", "version": "1.0.0"},
        latency_ms={"p50": 1.5, "p95": 3.0},
        errors={"decode": 2},
        system={"cpu": 0.25},
        confidence_histogram=[1, 2, 3],
    )
    items: list[tuple[Payload, datetime]] = [
        (_telemetry("pi-0", 5), _at(1)),
        (rich, _at(2)),
        (_telemetry("pi-0", 6), _at(3)),  # older seq after a newer one: stored, not "last"
        (_telemetry("pi-0", 5), _at(4)),  # repeated within the batch
        (_telemetry("ghost", 1), _at(4)),  # unknown device
        (Event(device_id="pi-1", seq=3, event="update.received", model=None), _at(5)),
        (State(device_id="pi-1", seq=4, phase="serving", agent_version="1.2"), _at(6)),
        (State(device_id="pi-1", seq=2, phase="idle", agent_version="1.1"), _at(7)),  # stale
        (Status(device_id="pi-1", status="online", ts=T0 + timedelta(seconds=8)), _at(8)),
        # Received later: applied, whatever its ts says (liveness is the server's clock).
        (Status(device_id="pi-1", status="offline", ts=T0), _at(9)),
    ]
    assert write_batch(engine=engine, items=items) == WriteResult(
        stored=7, duplicates=2, unknown_devices=1
    )
    # A redelivery of the whole batch stores nothing new (a status received at the same time as
    # the applied one is applied again: status only refuses what was received earlier).
    assert write_batch(engine=engine, items=items) == WriteResult(
        stored=1, duplicates=8, unknown_devices=1
    )
    with Session(engine) as session:
        rows = {r.seq: r for r in session.exec(select(TelemetryRow))}
        assert sorted(rows) == [5, 6, 7]
        stored = rows[7]
        assert stored.model == {"name": "digits", "version": "1.0.0"}
        assert stored.latency_ms == {"p50": 1.5, "p95": 3.0, "p99": None, "max": None}
        assert stored.errors == {"decode": 2} and stored.system == {"cpu": 0.25}
        assert stored.confidence_histogram == [1, 2, 3]
        assert stored.ts == T0 + timedelta(seconds=7) and stored.received_at == _at(2)
        assert rows[5].model is None and rows[5].latency_ms is None and rows[5].errors == {}
        [event] = session.exec(select(EventRow)).all()
        assert (event.device_id, event.seq, event.event) == ("pi-1", 3, "update.received")
        pi0 = session.get(Device, "pi-0")
        pi1 = session.get(Device, "pi-1")
        assert pi0 is not None and pi1 is not None
        assert pi0.telemetry_seq == 7 and pi0.last_seen == _at(4)
        assert pi0.last_telemetry is not None and pi0.last_telemetry["seq"] == 7
        assert pi0.last_telemetry["model"] == {"name": "digits", "version": "1.0.0"}
        assert (pi1.state_seq, pi1.phase, pi1.agent_version) == (4, "serving", "1.2")
        assert pi1.online is False and pi1.status_ts == _at(9)
        assert pi1.last_seen == _at(9)
