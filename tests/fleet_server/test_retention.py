"""Retention on SQLite and PostgreSQL: old raw telemetry rolled up per device/hour/model (sums,
maxima, mean p50, merged histograms), in bounded batches, merged into hourly rows already
there; raw rows deleted; old hourly rows deleted; recent rows untouched."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlmodel import SQLModel

from fleet_server.services.retention import RetentionJob
from tests.fleet_server.helpers import migrated_engine

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=8)  # 2026-11-15 12:00


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    with migrated_engine(database_url, ("dev-a", "dev-b"), NOW) as engine:
        yield engine


def _raw(device: str, seq: int, ts: datetime, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device_id": device,
        "seq": seq,
        "ts": ts,
        "received_at": ts + timedelta(seconds=1),
        "interval_s": 10.0,
        "model": {"name": "digits", "version": "1.0.0"},
        "inference_count": 100,
        "error_count": 1,
        "errors": {},
        "latency_ms": {"p50": 2.0, "p95": 5.0, "p99": None},
        "dropped": 0,
        "system": {},
        "confidence_histogram": [1, 2],
    }
    row.update(values)
    return row


def _insert(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(SQLModel.metadata.tables["telemetry"]), rows)


def _hourly(engine: Engine) -> dict[tuple[str, datetime, str, str], dict[str, Any]]:
    table = SQLModel.metadata.tables["telemetry_hourly"]
    with engine.connect() as conn:
        return {
            (r.device_id, r.hour, r.model_name, r.model_version): dict(r._mapping)
            for r in conn.execute(select(table)).all()
        }


def _raw_keys(engine: Engine) -> set[tuple[str, int]]:
    with engine.connect() as conn:
        return {(r[0], r[1]) for r in conn.execute(text("SELECT device_id, seq FROM telemetry"))}


def test_roll_up_merge_and_expire(engine: Engine) -> None:
    hour = OLD.replace(minute=0)
    _insert(
        engine,
        [
            _raw("dev-a", 1, OLD + timedelta(minutes=1)),
            _raw(
                "dev-a",
                2,
                OLD + timedelta(minutes=30),
                latency_ms={"p50": 4.0, "p95": 9.0, "p99": 12.0},
                confidence_histogram=[0, 1, 5],
                dropped=3,
            ),  # fmt: skip
            _raw("dev-a", 3, OLD + timedelta(minutes=59), latency_ms=None, error_count=0),
            _raw("dev-a", 4, OLD + timedelta(hours=1, minutes=5)),  # the next hour
            _raw("dev-a", 5, OLD + timedelta(minutes=10), model=None),  # no model loaded
            _raw("dev-b", 1, OLD + timedelta(minutes=2), confidence_histogram=[]),
            _raw("dev-a", 6, NOW - timedelta(days=1)),  # recent: stays raw
        ],
    )
    job = RetentionJob(engine=engine, raw_days=7, hourly_days=90, batch_size=2)
    result = job.run_once(now=NOW)
    assert result.rolled_up == 6 and result.batches == 3  # bounded: 2 raw rows per transaction
    assert _raw_keys(engine) == {("dev-a", 6)}
    rows = _hourly(engine)
    assert set(rows) == {
        ("dev-a", hour, "digits", "1.0.0"),
        ("dev-a", hour + timedelta(hours=1), "digits", "1.0.0"),
        ("dev-a", hour, "", ""),
        ("dev-b", hour, "digits", "1.0.0"),
    }
    a = rows[("dev-a", hour, "digits", "1.0.0")]
    assert a["samples"] == 3 and a["interval_s"] == 30.0
    assert (a["inference_count"], a["error_count"], a["dropped"]) == (300, 2, 3)
    assert a["latency_p50_mean"] == pytest.approx(3.0) and a["latency_p50_samples"] == 2
    assert (a["latency_p95_max"], a["latency_p99_max"]) == (9.0, 12.0)
    assert a["confidence_histogram"] == [2, 5, 5]
    assert rows[("dev-b", hour, "digits", "1.0.0")]["confidence_histogram"] == []

    # Late raw rows of an hour already rolled up are merged into its row (weighted p50).
    _insert(engine, [_raw("dev-a", 7, OLD + timedelta(minutes=40), latency_ms={"p50": 6.0,
            "p95": 1.0}, confidence_histogram=[1])])  # fmt: skip
    job.run_once(now=NOW)
    a = _hourly(engine)[("dev-a", hour, "digits", "1.0.0")]
    assert a["samples"] == 4 and a["inference_count"] == 400
    assert a["latency_p50_mean"] == pytest.approx(4.0) and a["latency_p50_samples"] == 3
    assert a["latency_p95_max"] == 9.0 and a["confidence_histogram"] == [3, 5, 5]

    # Nothing old left: a run changes nothing.
    assert job.run_once(now=NOW).rolled_up == 0
    # Hourly rows older than 90 days go.
    later = OLD + timedelta(days=90, minutes=30)
    result = job.run_once(now=later)
    assert result.hourly_deleted == 3  # the 12:00 rows; the 13:00 one is not old enough yet
    recent_hour = (NOW - timedelta(days=1)).replace(minute=0)
    assert set(_hourly(engine)) == {
        ("dev-a", hour + timedelta(hours=1), "digits", "1.0.0"),
        ("dev-a", recent_hour, "digits", "1.0.0"),  # the recent row aged out and rolled up
    }
    assert _raw_keys(engine) == set()


def test_a_run_is_bounded_and_the_next_one_continues(engine: Engine) -> None:
    _insert(engine, [_raw("dev-a", seq, OLD + timedelta(seconds=seq)) for seq in range(1, 26)])
    job = RetentionJob(engine=engine, raw_days=7, hourly_days=90, batch_size=5, max_batches=2)
    first = job.run_once(now=NOW)
    assert (first.rolled_up, first.batches) == (10, 2)
    assert len(_raw_keys(engine)) == 15
    for _ in range(3):
        job.run_once(now=NOW)
    assert _raw_keys(engine) == set()
    (row,) = _hourly(engine).values()
    assert row["samples"] == 25 and row["inference_count"] == 2500
    # A spent time budget starts no batch at all.
    _insert(engine, [_raw("dev-b", 1, OLD)])
    tight = RetentionJob(engine=engine, raw_days=7, hourly_days=90, budget_s=0.0)
    assert tight.run_once(now=NOW).batches == 0 and _raw_keys(engine) == {("dev-b", 1)}


def test_bad_configuration_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="positive"):
        RetentionJob(engine=engine, raw_days=0, hourly_days=90)
    with pytest.raises(ValueError, match="at least 1"):
        RetentionJob(engine=engine, raw_days=7, hourly_days=90, batch_size=0)
    with pytest.raises(ValueError, match="positive"):
        RetentionJob(engine=engine, raw_days=7, hourly_days=90, audit_days=0)


def test_audit_rows_past_their_retention_are_deleted(engine: Engine) -> None:
    """Old audit rows go in bounded batches (one and aggregated rows alike); recent rows stay;
    without audit_days nothing is deleted."""
    from fleet_server.services.audit import AuditEntry, record

    ages = [400, 366, 365.5, 364, 10, 0]  # days
    for i, days in enumerate(ages):
        record(
            engine=engine,
            entry=AuditEntry(actor="bootstrap", role="admin") if i % 2 else AuditEntry(),
            method="POST",
            path="/api/v1/devices",
            route="/api/v1/devices",
            status_code=201 if i % 2 else 401,
            source="192.0.2.1",
            now=NOW - timedelta(days=days),
        )
    audit = SQLModel.metadata.tables["audit_log"]

    def kept() -> list[float]:
        with engine.connect() as conn:
            stamps = conn.execute(select(audit.c.ts).order_by(audit.c.ts)).scalars().all()
        return [round((NOW - ts.replace(tzinfo=UTC)).total_seconds() / 86_400, 1) for ts in stamps]

    assert RetentionJob(engine=engine, raw_days=7, hourly_days=90).run_once(now=NOW).batches == 0
    assert len(kept()) == 6
    job = RetentionJob(engine=engine, raw_days=7, hourly_days=90, audit_days=365, batch_size=2)
    result = job.run_once(now=NOW)
    assert (result.audit_deleted, result.batches) == (3, 2)
    assert kept() == [364.0, 10.0, 0.0]
    assert job.run_once(now=NOW).audit_deleted == 0


def test_a_shadow_report_goes_with_its_raw_telemetry_row(engine: Engine) -> None:
    _insert(engine, [_raw("dev-a", 1, OLD), _raw("dev-a", 2, NOW - timedelta(days=1))])
    shadow = SQLModel.metadata.tables["shadow_reports"]
    report = {"model_name": "digits", "model_version": "2.0.0", "paired": 5, "skipped": 0}
    with engine.begin() as conn:
        conn.execute(
            insert(shadow),
            [
                {"device_id": "dev-a", "seq": s, "ts": ts, "disagreements": 1, "figures": {}}
                | report
                for s, ts in ((1, OLD), (2, NOW - timedelta(days=1)))
            ],
        )
    RetentionJob(engine=engine, raw_days=7, hourly_days=90).run_once(now=NOW)
    with engine.connect() as conn:
        left = {r.seq for r in conn.execute(select(shadow.c.seq))}
    assert left == {2} and _raw_keys(engine) == {("dev-a", 2)}
