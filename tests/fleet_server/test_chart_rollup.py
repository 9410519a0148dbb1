"""The telemetry roll-up (fleet_server.services.rollup) and the charts that read it, on SQLite
and PostgreSQL: a chart from the roll-up equals the same buckets summed in Python from the raw
rows (exactly; the mean p95 to its 4 rounded places), whatever the window, the device class, rows
on a bucket's edge, rows after the roll-up's mark and rows that commit late."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.db import make_engine, migrate
from fleet_server.models import Device, TelemetryRollupRow, TelemetryRow
from fleet_server.models.types import utcnow
from fleet_server.runtime import Runtime
from fleet_server.services import charts
from fleet_server.services.rollup import BUCKET_S, RollupJob
from tests.fleet_server.helpers import operator, unique_id

pytestmark = pytest.mark.integration

#: A fixed "now", not on a bucket edge.
NOW = datetime(2026, 12, 7, 12, 3, 17, 250000, tzinfo=UTC)
CLASSES = {"d-pi-1": "rpi4", "d-pi-2": "rpi4", "d-jet": "jetson", "d-none": None}


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    with Session(engine) as session:
        for device, device_class in CLASSES.items():
            session.add(Device(device_id=device, device_class=device_class, token_hash=device))
        session.commit()
    yield engine
    engine.dispose()


def _row(device: str, seq: int, at: datetime, rng: random.Random, **kw: Any) -> TelemetryRow:
    version = "2.0.0" if device == "d-jet" or (device == "d-pi-1" and seq % 2) else "1.0.0"
    p95 = None if seq % 13 == 0 else round(rng.uniform(2, 90), 3)
    fields: dict[str, Any] = {
        "device_id": device, "seq": seq, "ts": at, "received_at": at, "interval_s": 120.0,
        "model": {"name": "digits", "version": version},
        "inference_count": rng.randint(0, 500), "error_count": rng.randint(0, 3),
        "latency_ms": None if p95 is None else {"p50": 1.0, "p95": p95},
    }  # fmt: skip
    fields.update(kw)
    return TelemetryRow(**fields)


def _fleet(hours: int) -> list[TelemetryRow]:
    """Every device every ~2 minutes for ``hours`` up to NOW, some rows exactly on a bucket's
    edge (and a microsecond before one), rows without latency or without a p95, and rows of
    another model and of no model."""
    rng = random.Random(16)
    rows = []
    seq = 0
    for device in CLASSES:
        at = NOW - timedelta(hours=hours)
        while at < NOW:
            seq += 1
            rows.append(_row(device, seq, at, rng))
            at += timedelta(seconds=rng.uniform(60, 180))
    edge = datetime.fromtimestamp(int(NOW.timestamp()) // BUCKET_S * BUCKET_S, tz=UTC)
    for k in range(1, 40):
        at = edge - timedelta(seconds=BUCKET_S * k * 7)
        rows.append(_row("d-pi-2", seq + 2 * k, at, rng))
        rows.append(_row("d-pi-2", seq + 2 * k + 1, at - timedelta(microseconds=1), rng))
    seq += 100
    rows.append(_row("d-jet", seq + 1, NOW - timedelta(hours=2), rng, latency_ms={"p50": 1.0}))
    rows.append(_row("d-jet", seq + 2, NOW - timedelta(hours=3), rng, model=None))
    rows.append(
        _row(
            "d-jet", seq + 3, NOW - timedelta(hours=4), rng, model={"name": "other", "version": "9"}
        )
    )  # noqa: E501
    return rows


def _store(engine: sa.Engine, rows: list[TelemetryRow]) -> None:
    with Session(engine) as session:
        session.add_all([TelemetryRow(**r.model_dump()) for r in rows])
        session.commit()


def _expected(
    rows: list[TelemetryRow],
    chart: charts.LatencyChart,
    device_class: str | None = None,
    classes: dict[str, str | None] = CLASSES,
) -> dict[tuple[str, int], tuple[int, int, int, float | None, float | None]]:
    width = timedelta(seconds=chart.bucket_s)
    out: dict[tuple[str, int], list[Any]] = {}
    for r in rows:
        if r.model is None or r.model["name"] != chart.model:
            continue
        if not chart.since <= r.received_at < chart.until:
            continue
        if device_class is not None and (classes[r.device_id] or "") != device_class:
            continue
        key = (r.model["version"], (r.received_at - chart.since) // width)
        b = out.setdefault(key, [0, 0, 0, []])
        b[0] += 1
        b[1] += r.inference_count
        b[2] += r.error_count
        if r.latency_ms and r.latency_ms.get("p95") is not None:
            b[3].append(r.latency_ms["p95"])
    return {
        key: (n, inf, err, sum(p) / len(p) if p else None, max(p) if p else None)
        for key, (n, inf, err, p) in out.items()
    }


def _got(
    chart: charts.LatencyChart,
) -> dict[tuple[str, int], tuple[int, int, int, float | None, float | None]]:
    width = timedelta(seconds=chart.bucket_s)
    got = {}
    for series in chart.series:
        for p in series.points:
            index = (p.t - chart.since) // width
            assert p.t == chart.since + index * width  # on a bucket's start
            got[(series.version, index)] = (
                p.intervals, p.inferences, p.errors, p.p95_mean, p.p95_max
            )  # fmt: skip
    return got


def _assert_equal(got: dict[Any, Any], expected: dict[Any, Any]) -> None:
    assert got.keys() == expected.keys()
    for key, (*sums, mean, worst) in expected.items():
        assert list(got[key][:3]) == sums and got[key][4] == worst, key
        assert (got[key][3] is None) == (mean is None), key
        assert mean is None or abs(got[key][3] - mean) <= 1e-4, key  # rounded to 4 places


def _chart(
    engine: sa.Engine, *, hours: float, buckets: int = 120, **kw: Any
) -> charts.LatencyChart:
    span = charts.window(
        since=NOW - timedelta(hours=hours), until=NOW, buckets=buckets, now=NOW, raw_days=7
    )
    with Session(engine) as session:
        return charts.latency_series(session, model="digits", versions=[], span=span, **kw)


def test_rollup_chart_equals_the_raw_rows(engine: sa.Engine) -> None:
    rows = _fleet(hours=50)
    _store(engine, rows)
    before = _chart(engine, hours=48)
    assert before.source == "raw" and before.rolled_until is None  # nothing rolled up yet
    job = RollupJob(engine=engine, step_s=6 * 3600)  # a 50-hour backlog: several transactions
    result = job.run_once(now=NOW)
    assert result.steps >= 9 and result.rows_written > 0
    mark = int(NOW.timestamp() - 60) // BUCKET_S * BUCKET_S
    assert result.until_s == mark
    for hours, buckets in [(48, 120), (24, 120), (11, 120), (48, 500), (30, 7)]:
        chart = _chart(engine, hours=hours, buckets=buckets)
        assert chart.source == "rollup" and chart.rolled_until is not None
        assert chart.bucket_s % BUCKET_S == 0 and chart.since.timestamp() % BUCKET_S == 0
        assert chart.since <= NOW - timedelta(hours=hours) < chart.since + timedelta(seconds=300)
        assert len({p.t for s in chart.series for p in s.points}) <= buckets
        assert [s.version for s in chart.series] == ["1.0.0", "2.0.0"]
        _assert_equal(_got(chart), _expected(rows, chart))
        # The same window summed from the raw rows by the database: the same chart.
        raw = _chart(engine, hours=hours, buckets=buckets, source="raw")
        assert raw.source == "raw"
        _assert_equal(_got(raw), _expected(rows, raw))
    for device_class in ["rpi4", "jetson", ""]:
        chart = _chart(engine, hours=48, device_class=device_class)
        _assert_equal(_got(chart), _expected(rows, chart, device_class))
        assert chart.series  # every class has telemetry
    # A short window still reads raw rows.
    assert _chart(engine, hours=2).source == "raw"


def test_rollup_is_idempotent_and_takes_late_rows_within_late_s(engine: sa.Engine) -> None:
    rows = _fleet(hours=6)
    _store(engine, rows)
    job = RollupJob(engine=engine, late_s=1800)
    job.run_once(now=NOW)
    table = TelemetryRollupRow.__table__
    key = ["bucket_s", "model_name", "model_version", "device_class"]

    def rolled() -> list[Any]:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table).order_by(*key)).mappings().all()
        # A float sum's last digit depends on the order the database adds in.
        return [{**r, "p95_sum": r["p95_sum"] and round(r["p95_sum"], 6)} for r in rows]

    first = rolled()
    assert sum(r["intervals"] for r in first) == sum(
        1 for r in rows if r.received_at.timestamp() < (NOW.timestamp() - 60) // 300 * 300
    )
    assert job.run_once(now=NOW).rows_written > 0 and rolled() == first  # again: the same
    # A row that arrived 10 minutes before the mark commits only now: the next run counts it.
    rng = random.Random(3)
    late = _row("d-pi-1", 10**6, NOW - timedelta(minutes=12), rng)
    too_late = _row("d-pi-1", 10**6 + 1, NOW - timedelta(hours=2), rng)
    _store(engine, [late, too_late])
    job.run_once(now=NOW + timedelta(seconds=30))
    chart = _chart(engine, hours=6, buckets=60)
    assert chart.source == "rollup"
    expected = _expected([*rows, late], chart)  # the 2-hour-late row is not in the roll-up
    _assert_equal(_got(chart), expected)
    # Later: buckets move on, the raw tail after the mark shrinks; still equal.
    job.run_once(now=NOW + timedelta(minutes=20))
    chart = _chart(engine, hours=6, buckets=60)
    _assert_equal(_got(chart), expected)


def test_rollup_of_an_empty_table_and_forgetting_old_rows(engine: sa.Engine) -> None:
    job = RollupJob(engine=engine, keep_days=1)
    result = job.run_once(now=NOW)
    assert result.until_s is None and result.rows_written == 0
    _store(engine, _fleet(hours=40))
    job.run_once(now=NOW)
    forgot = job.run_once(now=NOW + timedelta(hours=20)).rows_deleted
    assert forgot > 0
    with engine.connect() as conn:
        oldest = conn.execute(sa.text("SELECT min(bucket_s) FROM telemetry_rollup")).scalar()
    assert oldest is not None and oldest >= (NOW - timedelta(hours=4)).timestamp() - BUCKET_S


def test_bad_settings_are_refused() -> None:
    engine = sa.create_engine("sqlite://")
    for bad in [{"grace_s": -1}, {"late_s": -5}, {"step_s": 10}, {"keep_days": 0}]:
        with pytest.raises(ValueError, match="step_s"):
            RollupJob(engine=engine, **bad)


def test_the_api_reads_the_rollup_and_refuses_bad_classes(
    app: tuple[TestClient, Runtime],
) -> None:
    client, runtime = app
    assert runtime.engine is not None
    model = unique_id("rollup")
    device = unique_id("rollup-dev")
    made = client.post(
        "/api/v1/devices", json={"device_id": device, "device_class": "rpi4"}, headers=operator()
    )
    assert made.status_code in (200, 201), made.text
    now = utcnow()
    rng = random.Random(5)
    version = {"name": model, "version": "1"}
    rows = [
        _row(device, seq, now - timedelta(minutes=seq * 3), rng, model=version)
        for seq in range(1, 400)
    ]
    _store(runtime.engine, rows)
    RollupJob(engine=runtime.engine).run_once()
    for device_class, found in [("rpi4", True), ("jetson", False), (None, True)]:
        params = {"model": model, "since": (now - timedelta(hours=20)).isoformat()}
        if device_class is not None:
            params["device_class"] = device_class
        got = client.get("/api/v1/charts/latency", params=params, headers=operator())
        assert got.status_code == 200, got.text
        chart = charts.LatencyChart.model_validate(got.json())
        assert chart.source == "rollup" and chart.bucket_s == 900
        assert bool(chart.series) is found
        if found:
            expected = _expected(rows, chart, device_class, {device: "rpi4"})
            _assert_equal(_got(chart), expected)
    for bad in ["../x", "a b", "x" * 65, "<script>", "rpi4\n"]:
        refused = client.get(
            "/api/v1/charts/latency", params={"model": model, "device_class": bad},
            headers=operator(),
        )  # fmt: skip
        assert refused.status_code == 422, (bad, refused.text)
