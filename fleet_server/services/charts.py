"""Time series for the dashboard's charts, down-sampled by the database.

A week of telemetry from 1,000 devices is millions of rows; a chart is a few hundred points. The
bucketing (``floor((received_at - since) / width)``) and the sums run in SQL, so what leaves the
database is at most ``buckets`` rows per version, whatever the fleet's size. Time is the server's
clock (``received_at``), as for the rollout gates and the drift detectors.

Raw telemetry is kept ``telemetry_raw_days`` (default 7); a window reaching further back starts
where the raw rows do (the response says so in ``since``).

From raw rows the database reads every row of the window (bench/charts_bench.py, 10 M rows on a
loaded 2-core machine: 1 hour 0.7 s, 1 day 9.5 s, 7 days 48 s). So a window whose buckets are at
least :data:`~fleet_server.services.rollup.BUCKET_S` wide reads the 5-minute roll-up
(:mod:`fleet_server.services.rollup`) up to its mark and raw rows only after it: the same values
(every figure merges exactly), buckets on 5-minute edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel import Session, SQLModel

from fleet_server.services import rollup
from fleet_server.services.errors import Unprocessable

#: Where a chart's sums come from.
Source = Literal["raw", "rollup"]

#: A chart is drawn with at most this many points per version.
MAX_BUCKETS = 500
#: Versions beyond these (the busiest first) are left out of one chart.
MAX_VERSIONS = 8
#: The longest window one request may ask for.
MAX_SPAN = timedelta(days=31)


class epoch_seconds(FunctionElement[float]):  # noqa: N801 - reads as SQL
    """Seconds since 1970 of a timestamp column, on PostgreSQL and SQLite alike."""

    type = sa.Float()
    inherit_cache = True


@compiles(epoch_seconds, "postgresql")
def _epoch_pg(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


class LatencyPoint(BaseModel):
    t: datetime = Field(description="Start of the bucket.")
    intervals: int = Field(description="Telemetry rows (device intervals) in the bucket.")
    inferences: int
    errors: int
    error_rate: float | None = Field(description="errors / inferences; null without inferences.")
    p95_mean: float | None = Field(description="Mean of the intervals' p95 latency (ms).")
    p95_max: float | None = Field(description="Worst interval p95 latency (ms).")


class LatencySeries(BaseModel):
    version: str
    points: list[LatencyPoint] = Field(description="Buckets with telemetry, oldest first.")


class LatencyChart(BaseModel):
    model: str
    since: datetime = Field(description="Start (clamped to the raw telemetry kept).")
    until: datetime
    bucket_s: float = Field(description="Width of one bucket in seconds.")
    source: Source = Field(
        description="raw: summed from raw telemetry; rollup: from the 5-minute roll-up up to "
        "``rolled_until`` and raw telemetry after it (same values, buckets on 5-minute edges)."
    )
    rolled_until: datetime | None = Field(description="How far the roll-up goes (null: not yet).")
    series: list[LatencySeries]
    versions_left_out: int = Field(description="Quieter versions beyond the chart's limit.")


@dataclass(frozen=True)
class Window:
    """``since`` ≤ t < ``until`` cut into ``buckets`` buckets of ``width_s`` seconds."""

    since: datetime
    until: datetime
    buckets: int
    #: A fixed bucket width (seconds); default: the window cut into ``buckets``.
    step: int | None = None

    @property
    def width_s(self) -> float:
        if self.step is not None:
            return float(self.step)
        return max(1.0, math.ceil((self.until - self.since).total_seconds() / self.buckets))

    def aligned(self, unit: int) -> Window:
        """The start down and the width up to whole ``unit`` seconds (roll-up buckets): as many
        buckets as needed, never more than asked for."""
        since_s = int(self.since.timestamp()) // unit * unit
        width = math.ceil(self.width_s / unit) * unit
        buckets = max(1, math.ceil((self.until.timestamp() - since_s) / width))
        since = datetime.fromtimestamp(since_s, tz=self.since.tzinfo)
        return Window(since=since, until=self.until, buckets=buckets, step=width)

    def start_of(self, index: int) -> datetime:
        return self.since + timedelta(seconds=index * self.width_s)


def window(
    *, since: datetime | None, until: datetime | None, buckets: int, now: datetime, raw_days: float
) -> Window:
    """The window a request asks for (default: the last 24 hours), checked and clamped to the
    raw telemetry still kept."""
    until = until or now
    try:
        since = since or until - timedelta(hours=24)
    except OverflowError as err:
        raise Unprocessable("until: out of range") from err
    if since >= until:
        raise Unprocessable("since must be before until")
    if until - since > MAX_SPAN:
        raise Unprocessable(f"a chart spans at most {MAX_SPAN.days} days")
    if not 1 <= buckets <= MAX_BUCKETS:
        raise Unprocessable(f"buckets must be 1 to {MAX_BUCKETS}")
    kept = now - timedelta(days=raw_days)
    since = max(since, kept)
    if since >= until:
        raise Unprocessable(f"raw telemetry is kept {raw_days:g} days; the window is older")
    return Window(since=since, until=until, buckets=buckets)


def latency_series(
    session: Session,
    *,
    model: str,
    versions: list[str],
    span: Window,
    device_class: str | None = None,
    source: Source | None = None,
) -> LatencyChart:
    """Per version of ``model`` (``versions``, or the busiest ones) and per bucket: telemetry
    intervals, inferences, errors, the error rate, and the devices' interval p95 latency (median
    is not computable in portable SQL: the mean, and the worst).

    ``source`` (default: chosen) is ``raw`` when a bucket is narrower than a roll-up bucket or
    nothing is rolled up yet; else ``rollup``: the window's start moves down and the bucket width
    up to whole roll-up buckets, the roll-up answers up to its mark and raw rows after it."""
    conn = session.connection()
    mark = rollup.rolled_until(conn)
    if source is None:
        source = "rollup" if mark is not None and span.width_s >= rollup.BUCKET_S else "raw"
    sums: dict[tuple[str, int], _Sums] = {}
    if source == "raw":
        since_s = span.since.timestamp()
        bucket = sa.func.floor((epoch_seconds(_raw().c.received_at) - since_s) / span.width_s)
        _add_rows(sums, conn.execute(_raw_query(model, versions, device_class, span, bucket)))
    else:
        span = span.aligned(rollup.BUCKET_S)
        since_s = int(span.since.timestamp())
        width = int(span.width_s)
        split = max(since_s, min(mark or since_s, rollup.floor_s(span.until)))
        table = SQLModel.metadata.tables["telemetry_rollup"]
        where = [
            table.c.model_name == model,
            table.c.bucket_s >= since_s,
            table.c.bucket_s < split,
        ]
        if versions:
            where.append(table.c.model_version.in_(versions))
        if device_class is not None:
            where.append(table.c.device_class == device_class)
        position = (table.c.bucket_s - since_s) // width
        query = (
            sa.select(
                table.c.model_version.label("version"),
                position.label("bucket"),
                sa.func.sum(table.c.intervals).label("intervals"),
                sa.func.sum(table.c.inferences).label("inferences"),
                sa.func.sum(table.c.errors).label("errors"),
                sa.func.sum(table.c.p95_sum).label("p95_sum"),
                sa.func.sum(table.c.p95_count).label("p95_count"),
                sa.func.max(table.c.p95_max).label("p95_max"),
            )
            .where(*where)
            .group_by(table.c.model_version, position)
        )
        _add_rows(sums, conn.execute(query))
        tail = Window(since=rollup.to_dt(split), until=span.until, buckets=span.buckets, step=width)
        exact = (rollup.bucket_start(_raw().c.received_at) - since_s) // width
        _add_rows(sums, conn.execute(_raw_query(model, versions, device_class, tail, exact)))
    series: dict[str, list[LatencyPoint]] = {}
    totals: dict[str, int] = {}
    for (version, raw_index), b in sums.items():
        index = min(raw_index, span.buckets - 1)  # float rounding at the very end
        series.setdefault(version, []).append(
            LatencyPoint(
                t=span.start_of(index),
                intervals=b.intervals,
                inferences=b.inferences,
                errors=b.errors,
                error_rate=_round(b.errors / b.inferences) if b.inferences else None,
                p95_mean=_round(b.p95_sum / b.p95_count) if b.p95_count else None,
                p95_max=_round(b.p95_max),
            )
        )
        totals[version] = totals.get(version, 0) + b.intervals
    kept = sorted(series, key=lambda v: (-totals[v], v))[:MAX_VERSIONS]
    return LatencyChart(
        model=model,
        since=span.since,
        until=span.until,
        bucket_s=span.width_s,
        source=source,
        rolled_until=None if mark is None else rollup.to_dt(mark),
        series=[
            LatencySeries(version=v, points=sorted(series[v], key=lambda p: p.t))
            for v in sorted(kept)
        ],
        versions_left_out=max(0, len(series) - len(kept)),
    )


@dataclass
class _Sums:
    intervals: int = 0
    inferences: int = 0
    errors: int = 0
    p95_sum: float = 0.0
    p95_count: int = 0
    p95_max: float | None = None


def _raw() -> sa.Table:
    return SQLModel.metadata.tables["telemetry"]


def _raw_query(
    model: str,
    versions: list[str],
    device_class: str | None,
    span: Window,
    bucket: sa.ColumnElement[Any],
) -> sa.Select[Any]:
    table = _raw()
    version = table.c.model["version"].as_string()
    p95 = table.c.latency_ms["p95"].as_float()
    where = [
        table.c.received_at >= span.since,
        table.c.received_at < span.until,
        table.c.model["name"].as_string() == model,
    ]
    if versions:
        where.append(version.in_(versions))
    query = sa.select(
        version.label("version"),
        bucket.label("bucket"),
        sa.func.count().label("intervals"),
        sa.func.sum(table.c.inference_count).label("inferences"),
        sa.func.sum(table.c.error_count).label("errors"),
        sa.func.sum(p95).label("p95_sum"),
        sa.func.count(p95).label("p95_count"),
        sa.func.max(p95).label("p95_max"),
    )
    if device_class is not None:
        device = SQLModel.metadata.tables["device"]
        query = query.join(device, device.c.device_id == table.c.device_id)
        where.append(sa.func.coalesce(device.c.device_class, "") == device_class)
    return query.where(*where).group_by(version, bucket)


def _add_rows(sums: dict[tuple[str, int], _Sums], rows: Any) -> None:
    """Merge grouped rows (raw or roll-up: the same columns) into ``sums``; exact."""
    for row in rows:
        # A model without a version is '' in the roll-up; the same here.
        b = sums.setdefault((row.version or "", int(row.bucket)), _Sums())
        b.intervals += int(row.intervals)
        b.inferences += int(row.inferences or 0)
        b.errors += int(row.errors or 0)
        b.p95_sum += float(row.p95_sum or 0.0)
        b.p95_count += int(row.p95_count or 0)
        if row.p95_max is not None:
            worst = float(row.p95_max)
            b.p95_max = worst if b.p95_max is None else max(b.p95_max, worst)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
