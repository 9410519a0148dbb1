"""The ingest writer on its own (no broker): batching, idempotence and throughput, on SQLite
and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from edgefleet.contract import Channel, Telemetry, encode, topic
from fleet_server.db import make_engine, migrate
from fleet_server.messaging.ingest import IngestWriter
from fleet_server.messaging.stats import IngestStats
from fleet_server.models import Device, TelemetryRow

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    with Session(engine) as session:
        for i in range(4):
            session.add(Device(device_id=f"pi-{i}", token_hash=f"{i:064x}"))
        session.commit()
    try:
        yield engine
    finally:
        engine.dispose()


def _telemetry(device_id: str, seq: int) -> bytes:
    return encode(
        Telemetry(device_id=device_id, seq=seq, interval_s=1, model=None, inference_count=seq)
    )


def _count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(TelemetryRow)).one())


def test_batches_dedupes_and_measures(engine: Engine) -> None:
    stats = IngestStats()
    writer = IngestWriter(engine=engine, stats=stats, batch_size=500, interval_s=0.2)
    writer.start()
    try:
        messages = [
            (topic(f"pi-{i % 4}", Channel.TELEMETRY), _telemetry(f"pi-{i % 4}", i))
            for i in range(4000)
        ]
        started = time.perf_counter()
        for t, raw in messages:
            writer.submit(t, raw)
        assert writer.flush(60)
        elapsed = time.perf_counter() - started
        # Redeliveries (some in the same batch as their original, some later) change nothing.
        for t, raw in messages[:300] + messages[:300]:
            writer.submit(t, raw)
        assert writer.flush(30)
    finally:
        writer.stop()
    snap = stats.snapshot()
    assert snap == {"received": 4600, "stored": 4000, "duplicates": 600, "rejected": {}}
    assert _count(engine) == 4000
    assert stats.batches <= 4000 // 500 + 10, "writes must be batched"
    print(f"ingest writer: {4000 / elapsed:.0f} telemetry msg/s ({engine.dialect.name})")


def test_stop_writes_what_is_queued(engine: Engine) -> None:
    stats = IngestStats()
    writer = IngestWriter(engine=engine, stats=stats, batch_size=50, interval_s=5)
    writer.start()
    for seq in range(120):
        writer.submit(topic("pi-1", Channel.TELEMETRY), _telemetry("pi-1", seq))
    writer.stop()
    assert _count(engine) == 120


def test_database_outage_is_counted_and_survived(engine: Engine) -> None:
    stats = IngestStats()
    broken = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    writer = IngestWriter(engine=broken, stats=stats, interval_s=0.01, retries=1)
    writer.start()
    try:
        writer.submit(topic("pi-1", Channel.TELEMETRY), _telemetry("pi-1", 1))
        assert writer.flush(30)
        assert stats.snapshot()["rejected"] == {"db_error": 1}
        writer.submit("edgefleet/v1/pi-1/telemetry", b"{}")
        assert writer.flush(10)
        assert stats.snapshot()["rejected"] == {"db_error": 1, "schema": 1}
    finally:
        writer.stop()
        broken.dispose()


def test_full_queue_drops_and_counts(engine: Engine) -> None:
    stats = IngestStats()
    writer = IngestWriter(engine=engine, stats=stats, queue_size=2, submit_timeout_s=0.01)
    # Not started: nothing drains the queue.
    for seq in range(5):
        writer.submit(topic("pi-1", Channel.TELEMETRY), _telemetry("pi-1", seq))
    assert stats.snapshot()["rejected"] == {"overloaded": 3}
    writer.start()
    writer.stop()
    assert _count(engine) == 2


def test_results_on_a_wildcard_subscription_are_skipped_not_rejected(engine: Engine) -> None:
    """A server that subscribes to ``edgefleet/v1/+/#`` also gets ``results``: not an error."""
    from edgefleet.contract import ModelRef, Result

    stats = IngestStats()
    writer = IngestWriter(engine=engine, stats=stats, batch_size=50, interval_s=0.05)
    writer.start()
    try:
        result = Result(
            device_id="pi-1",
            seq=1,
            model=ModelRef(name="digits", version="1.0.0"),
            input_id="a.png",
            task="classification",
            output={"top_k": [{"label": "3", "score": 0.9}]},
        )
        writer.submit(topic("pi-1", Channel.RESULTS), encode(result))
        writer.submit("edgefleet/v1/pi-1/unknown", b"{}")  # an unknown channel still is
        writer.submit(topic("pi-1", Channel.TELEMETRY), _telemetry("pi-1", 2))
        assert writer.flush(30)
    finally:
        writer.stop()
    assert stats.snapshot() == {
        "received": 3,
        "stored": 1,
        "duplicates": 0,
        "rejected": {"bad_topic": 1},
    }
