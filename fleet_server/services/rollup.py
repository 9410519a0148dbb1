"""The telemetry roll-up behind the dashboard's long charts: raw telemetry summed per
:data:`BUCKET_S` bucket of server time (``received_at``), model, version and device class into
``telemetry_rollup``, by a :class:`~fleet_server.services.leader.PeriodicJob` (one replica at a
time).

Why a job and not ingest: every device of a version writes the same roll-up row within the same
5 minutes, so an upsert at ingest would serialise the ingest workers on that row's lock; the job
sums a few minutes of raw rows in one ``INSERT … SELECT … GROUP BY`` the database runs itself.

Exact, not approximate: the chart shows counts, sums, the mean of the intervals' p95 latency and
the worst p95; each merges exactly (sum, count, max), so a chart bucket summed from roll-up rows
equals the same bucket summed from raw rows. (A fleet-wide latency *percentile* would not merge
this way; it would need a mergeable sketch. The chart does not draw one.)

Late rows: ``received_at`` is set when the message arrives, and the row commits later (the
ingest batch, or a database outage the writer waits out). Each run therefore recomputes the
last ``late_s`` of buckets from the raw rows (delete and insert in one transaction, so it is
idempotent) and never rolls up the newest ``grace_s``. A row that commits more than ``late_s``
after it arrived is in the raw chart but not in the roll-up. ``until_s`` in
``telemetry_rollup_mark`` says how far the roll-up goes; a chart reads raw rows after it.

Roll-up rows older than ``keep_days`` are deleted by the same job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel import SQLModel

from fleet_server.models.types import utcnow

log = logging.getLogger(__name__)

#: Width of one roll-up bucket (seconds). A chart wider than 120 × 5 min (10 hours) reads it.
BUCKET_S = 300
MARK = "telemetry"
MARK_TABLE = "telemetry_rollup_mark"


class bucket_start(FunctionElement[int]):  # noqa: N801 - reads as SQL
    """Start (whole Unix seconds) of the ``BUCKET_S`` bucket a timestamp falls in, computed in
    integers on both databases so a row on a bucket's edge lands in the same bucket as the
    ``WHERE`` on the timestamp puts it (float epochs can be off by a microsecond)."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(bucket_start, "postgresql")
def _bucket_pg(element: bucket_start, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column}) / {BUCKET_S}) * {BUCKET_S} AS BIGINT)"


@compiles(bucket_start, "sqlite")
def _bucket_sqlite(element: bucket_start, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    # Whole seconds from the text itself: SQLite rounds fractions to the millisecond, which
    # would move a row 0.5 ms before an edge into the next bucket.
    seconds = f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER)"
    return f"({seconds} / {BUCKET_S} * {BUCKET_S})"


def to_dt(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def floor_s(at: datetime) -> int:
    """``at`` as Unix seconds, down to a bucket's start."""
    return int(at.timestamp()) // BUCKET_S * BUCKET_S


@dataclass
class RollupResult:
    rows_written: int = 0
    rows_deleted: int = 0
    steps: int = 0
    until_s: int | None = None


class RollupJob:
    """The periodic job; ``run_once`` is the same work without the leader loop."""

    name = "telemetry-rollup"

    def __init__(
        self,
        *,
        engine: sa.Engine,
        interval_s: float = 60.0,
        grace_s: int = 60,
        late_s: int = 1800,
        step_s: int = 6 * 3600,
        keep_days: float = 90.0,
        budget_s: float | None = None,
    ) -> None:
        if grace_s < 0 or late_s < 0 or step_s < BUCKET_S or keep_days <= 0:
            raise ValueError("grace_s, late_s ≥ 0, step_s ≥ one bucket, keep_days > 0")
        self.engine = engine
        self.interval_s = interval_s
        #: The newest buckets not rolled up yet (rows still arriving).
        self.grace_s = grace_s
        #: Each run recomputes this much before the mark (rows that committed late).
        self.late_s = late_s
        #: At most this much raw time per transaction (a first run over a week of backlog).
        self.step_s = step_s // BUCKET_S * BUCKET_S
        self.keep_days = keep_days
        #: Start no new step after this long (keep a run well inside the driver lease).
        self.budget_s = budget_s

    def run(self, *, epoch: int) -> None:
        result = self.run_once()
        log.info("telemetry roll-up ran", extra={"epoch": epoch, **result.__dict__})

    def run_once(self, *, now: datetime | None = None) -> RollupResult:
        now = now or utcnow()
        end = floor_s(now - timedelta(seconds=self.grace_s))
        result = RollupResult()
        started = time.monotonic()
        while self.budget_s is None or time.monotonic() - started < self.budget_s:
            done, written = self._step(end)
            result.rows_written += written
            result.steps += 1
            result.until_s = done
            if done is None or done >= end:
                break
        result.rows_deleted = self._forget(now - timedelta(days=self.keep_days))
        return result

    def _step(self, end: int) -> tuple[int | None, int]:
        """Recompute ``[mark - late_s, min(mark + step_s, end))`` and move the mark; one
        transaction. Returns the new mark (None: no telemetry yet) and the rows written."""
        raw, rollup, mark = _table("telemetry"), _table("telemetry_rollup"), _table(MARK_TABLE)
        with self.engine.begin() as conn:
            lock = sa.select(mark.c.until_s).where(mark.c.name == MARK)
            if conn.dialect.name == "postgresql":
                lock = lock.with_for_update()
            until = conn.execute(lock).scalar()
            if until is None:
                first = conn.execute(sa.select(sa.func.min(raw.c.received_at))).scalar()
                if first is None:
                    return None, 0
                lo = hi_from = floor_s(first)
            else:
                lo, hi_from = max(0, int(until) - self.late_s) // BUCKET_S * BUCKET_S, int(until)
            hi = min(hi_from + self.step_s, max(end, hi_from))
            if hi <= lo:
                return hi_from, 0
            conn.execute(sa.delete(rollup).where(rollup.c.bucket_s >= lo, rollup.c.bucket_s < hi))
            conn.execute(
                sa.insert(rollup).from_select(
                    [
                        "model_name",
                        "bucket_s",
                        "model_version",
                        "device_class",
                        "intervals",
                        "inferences",
                        "errors",
                        "p95_sum",
                        "p95_count",
                        "p95_max",
                    ],
                    _aggregate(lo, hi),
                )
            )
            # (Counted, not the INSERT's rowcount: psycopg reports 0 for INSERT … SELECT here.)
            written = conn.execute(
                sa.select(sa.func.count())
                .select_from(rollup)
                .where(rollup.c.bucket_s >= lo, rollup.c.bucket_s < hi)
            ).scalar_one()
            if until is None:
                conn.execute(sa.insert(mark).values(name=MARK, until_s=hi))
            else:
                conn.execute(sa.update(mark).where(mark.c.name == MARK).values(until_s=hi))
        return hi, int(written)

    def _forget(self, before: datetime) -> int:
        rollup = _table("telemetry_rollup")
        with self.engine.begin() as conn:
            deleted = conn.execute(
                sa.delete(rollup).where(rollup.c.bucket_s < floor_s(before))
            ).rowcount
        return max(0, deleted or 0)


def _aggregate(lo: int, hi: int) -> sa.Select[Any]:
    """Raw rows received in ``[lo, hi)`` (Unix seconds), summed per roll-up key."""
    raw, device = _table("telemetry"), _table("device")
    name = sa.func.coalesce(raw.c.model["name"].as_string(), "")
    version = sa.func.coalesce(raw.c.model["version"].as_string(), "")
    device_class = sa.func.coalesce(device.c.device_class, "")
    p95 = raw.c.latency_ms["p95"].as_float()
    bucket = bucket_start(raw.c.received_at)
    return (
        sa.select(
            name,
            bucket,
            version,
            device_class,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(raw.c.inference_count), 0),
            sa.func.coalesce(sa.func.sum(raw.c.error_count), 0),
            sa.func.sum(p95),
            sa.func.count(p95),
            sa.func.max(p95),
        )
        .select_from(raw.outerjoin(device, device.c.device_id == raw.c.device_id))
        .where(raw.c.received_at >= to_dt(lo), raw.c.received_at < to_dt(hi))
        .group_by(name, bucket, version, device_class)
    )


def rolled_until(conn: sa.Connection) -> int | None:
    """End (Unix seconds) of the rolled-up buckets; None before the first run."""
    mark = _table(MARK_TABLE)
    value = conn.execute(sa.select(mark.c.until_s).where(mark.c.name == MARK)).scalar()
    return None if value is None else int(value)


def _table(name: str) -> sa.Table:
    return SQLModel.metadata.tables[name]
