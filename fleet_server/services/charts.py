"""Time series for the dashboard's charts, down-sampled by the database.

A week of telemetry from 1,000 devices is millions of rows; a chart is a few hundred points. The
bucketing (``floor((received_at - since) / width)``) and the sums run in SQL, so what leaves the
database is at most ``buckets`` rows per version, whatever the fleet's size. Time is the server's
clock (``received_at``), as for the rollout gates and the drift detectors.

Raw telemetry is kept ``telemetry_raw_days`` (default 7); a window reaching further back starts
where the raw rows do (the response says so in ``since``).

The database still reads every row of the window (bench/charts_bench.py, 10 M rows on a loaded
2-core machine: 1 hour 0.7 s, 1 day 9.5 s, 7 days 48 s): hours and days are what the rollout and
model views ask for; a week wants a rollup table, which this module does not have yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel import Session, SQLModel

from fleet_server.services.errors import Unprocessable

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
    series: list[LatencySeries]
    versions_left_out: int = Field(description="Quieter versions beyond the chart's limit.")


@dataclass(frozen=True)
class Window:
    """``since`` ≤ t < ``until`` cut into ``buckets`` buckets of ``width_s`` seconds."""

    since: datetime
    until: datetime
    buckets: int

    @property
    def width_s(self) -> float:
        return max(1.0, math.ceil((self.until - self.since).total_seconds() / self.buckets))

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
    session: Session, *, model: str, versions: list[str], span: Window
) -> LatencyChart:
    """Per version of ``model`` (``versions``, or the busiest ones) and per bucket: telemetry
    intervals, inferences, errors, the error rate, and the devices' interval p95 latency (median
    is not computable in portable SQL: the mean, and the worst)."""
    table = SQLModel.metadata.tables["telemetry"]
    version = table.c.model["version"].as_string()
    p95 = table.c.latency_ms["p95"].as_float()
    bucket = sa.func.floor(
        (epoch_seconds(table.c.received_at) - span.since.timestamp()) / span.width_s
    )
    where = [
        table.c.received_at >= span.since,
        table.c.received_at < span.until,
        table.c.model["name"].as_string() == model,
    ]
    if versions:
        where.append(version.in_(versions))
    query = (
        sa.select(
            version.label("version"),
            bucket.label("bucket"),
            sa.func.count().label("intervals"),
            sa.func.sum(table.c.inference_count).label("inferences"),
            sa.func.sum(table.c.error_count).label("errors"),
            sa.func.avg(p95).label("p95_mean"),
            sa.func.max(p95).label("p95_max"),
        )
        .where(*where)
        .group_by(version, bucket)
    )
    series: dict[str, list[LatencyPoint]] = {}
    totals: dict[str, int] = {}
    for row in session.connection().execute(query):
        index = min(int(row.bucket), span.buckets - 1)  # float rounding at the very end
        inferences, errors = int(row.inferences or 0), int(row.errors or 0)
        series.setdefault(row.version, []).append(
            LatencyPoint(
                t=span.start_of(index),
                intervals=int(row.intervals),
                inferences=inferences,
                errors=errors,
                error_rate=_round(errors / inferences) if inferences else None,
                p95_mean=_round(row.p95_mean),
                p95_max=_round(row.p95_max),
            )
        )
        totals[row.version] = totals.get(row.version, 0) + int(row.intervals)
    kept = sorted(series, key=lambda v: (-totals[v], v))[:MAX_VERSIONS]
    return LatencyChart(
        model=model,
        since=span.since,
        until=span.until,
        bucket_s=span.width_s,
        series=[
            LatencySeries(version=v, points=sorted(series[v], key=lambda p: p.t))
            for v in sorted(kept)
        ],
        versions_left_out=max(0, len(series) - len(kept)),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
