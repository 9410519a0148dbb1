"""The ingest writer on its own (no broker): batching, idempotence and throughput, on SQLite
and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from edgefleet.contract import Channel, Telemetry, encode, topic
from fleet_server.db import make_engine, migrate
from fleet_server.messaging.ingest import Inbound, IngestWriter
from fleet_server.messaging.stats import IngestStats
from fleet_server.models import Device, TelemetryRow
from fleet_server.models.types import utcnow

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


def test_an_unreachable_database_drops_nothing(engine: Engine) -> None:
    """Unreachable (connection refused) is not refused data: the batch is kept, retried with
    back-off, counted, and its acknowledgements held; giving up (stopping) acknowledges
    nothing. The same batch is stored once the database answers."""
    stats = IngestStats()
    broken = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    acks: list[int] = []
    messages = [
        Inbound(topic("pi-1", Channel.TELEMETRY), _telemetry("pi-1", seq), utcnow(), lambda: None)
        for seq in range(1, 4)
    ]
    waits: list[float] = []

    def wait(delay: float) -> bool:
        waits.append(delay)
        return len(waits) < 4

    writer = IngestWriter(engine=broken, stats=stats, retry_initial_s=0.01, retry_max_s=0.02)
    try:
        assert writer.write_now(messages, wait=wait) is False
        assert waits == [0.01, 0.02, 0.02, 0.02]  # capped exponential back-off
        assert stats.db_retries == 4 and stats.any_stalled
        assert stats.snapshot()["rejected"] == {}

        threaded = IngestWriter(engine=broken, stats=stats, interval_s=0.01)
        threaded.start()
        threaded.submit(
            topic("pi-1", Channel.TELEMETRY), _telemetry("pi-1", 1), ack=lambda: acks.append(1)
        )
        assert not threaded.flush(1.5), "held while the database is unreachable"
        threaded.stop(timeout=0.5)
        assert acks == [] and stats.snapshot()["rejected"] == {}
    finally:
        broken.dispose()
    assert IngestWriter(engine=engine, stats=stats).write_now(messages) is True
    assert not stats.any_stalled
    assert _count(engine) == 3


def test_full_queue_drops_and_counts(engine: Engine) -> None:
    stats = IngestStats()
    writer = IngestWriter(engine=engine, stats=stats, queue_size=2, submit_timeout_s=0.01)
    acked: list[int] = []
    # Not started: nothing drains the queue.
    for seq in range(5):
        writer.submit(
            topic("pi-1", Channel.TELEMETRY),
            _telemetry("pi-1", seq),
            ack=partial(acked.append, seq),
        )
    assert stats.snapshot()["rejected"] == {"overloaded": 3}
    assert acked == []  # a dropped message stays with the broker (not acknowledged)
    writer.start()
    writer.stop()
    assert _count(engine) == 2
    assert acked == [0, 1]  # acknowledged once stored


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
