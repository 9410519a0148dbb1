"""Telemetry retention: raw rows older than ``raw_days`` (by ``received_at``, the server's clock)
are rolled up into ``telemetry_hourly`` (per device, hour of the device's ``ts``, and model) and
deleted; hourly rows older than ``hourly_days`` are deleted. Work happens in transactions of at
most ``batch_size`` raw rows, at most ``max_batches`` per run, so a backlog never holds locks for
long (nor starts one after ``budget_s``); a run that stops half way leaves consistent tables
(each batch's roll-up and delete commit together) and the next run goes on.

A raw row's shadow report (``shadow_reports``, same key) is deleted with it, not rolled up.

Audit log rows older than ``audit_days`` (by ``ts``) are deleted the same way, in batches, and
so are captured samples received more than ``sample_days`` ago (labelled or not), their content
in the store with the last row that refers to it.

Runs as a :class:`~fleet_server.services.leader.PeriodicJob`, so on one replica at a time. A raw
row re-inserted after its roll-up (a QoS 1 redelivery more than ``raw_days`` late) would be
counted again by the next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, delete, insert, or_, select, tuple_, update
from sqlmodel import Session, SQLModel

from fleet_server.models.types import utcnow
from fleet_server.storage import ArtifactStore

log = logging.getLogger(__name__)


@dataclass
class RetentionResult:
    rolled_up: int = 0
    hourly_written: int = 0
    hourly_deleted: int = 0
    audit_deleted: int = 0
    samples_deleted: int = 0
    batches: int = 0


@dataclass
class _Bucket:
    samples: int = 0
    interval_s: float = 0.0
    inference_count: int = 0
    error_count: int = 0
    dropped: int = 0
    p50_sum: float = 0.0
    p50_samples: int = 0
    p95_max: float | None = None
    p99_max: float | None = None
    histogram: list[int] = field(default_factory=list)


class RetentionJob:
    """The periodic job; ``run_once`` is the same work without the leader loop."""

    name = "telemetry-retention"

    def __init__(
        self,
        *,
        engine: Engine,
        raw_days: float,
        hourly_days: float,
        audit_days: float | None = None,
        sample_days: float | None = None,
        store: ArtifactStore | None = None,
        interval_s: float = 3600.0,
        batch_size: int = 5000,
        max_batches: int = 100,
        budget_s: float | None = None,
    ) -> None:
        if raw_days <= 0 or hourly_days <= 0 or (audit_days is not None and audit_days <= 0):
            raise ValueError("retention periods must be positive")
        if sample_days is not None and (sample_days <= 0 or store is None):
            raise ValueError("sample retention needs a positive period and the store")
        if batch_size < 1 or max_batches < 1:
            raise ValueError("batch_size and max_batches must be at least 1")
        self.engine = engine
        self.raw_days = raw_days
        self.hourly_days = hourly_days
        #: None keeps the audit log forever.
        self.audit_days = audit_days
        #: None keeps samples forever; their content is deleted from ``store``.
        self.sample_days = sample_days
        self.store = store
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.max_batches = max_batches
        #: Start no new batch after this long (keep a run well inside the driver lease).
        self.budget_s = budget_s

    def run(self, *, epoch: int) -> None:
        result = self.run_once()
        log.info(
            "telemetry retention ran",
            extra={"epoch": epoch, **result.__dict__},
        )

    def run_once(self, *, now: datetime | None = None) -> RetentionResult:
        now = now or utcnow()
        raw_cutoff = now - timedelta(days=self.raw_days)
        hourly_cutoff = now - timedelta(days=self.hourly_days)
        result = RetentionResult()
        started = time.monotonic()

        def more() -> bool:
            within = self.budget_s is None or time.monotonic() - started < self.budget_s
            return within and result.batches < self.max_batches

        while more():
            rolled, written = self._roll_up_batch(raw_cutoff)
            if rolled:
                result.batches += 1
            result.rolled_up += rolled
            result.hourly_written += written
            if rolled < self.batch_size:
                break
        while more():
            deleted = self._delete_hourly_batch(hourly_cutoff)
            result.hourly_deleted += deleted
            if deleted:
                result.batches += 1
            if deleted < self.batch_size:
                break
        while self.audit_days is not None and more():
            deleted = self._delete_audit_batch(now - timedelta(days=self.audit_days))
            result.audit_deleted += deleted
            if deleted:
                result.batches += 1
            if deleted < self.batch_size:
                break
        while self.sample_days is not None and more():
            deleted = self._delete_sample_batch(now - timedelta(days=self.sample_days))
            result.samples_deleted += deleted
            if deleted:
                result.batches += 1
            if deleted < self.batch_size:
                break
        return result

    # -- one transaction each ----------------------------------------------------------------
    def _roll_up_batch(self, cutoff: datetime) -> tuple[int, int]:
        raw, hourly = _table("telemetry"), _table("telemetry_hourly")
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(
                    raw.c.device_id,
                    raw.c.seq,
                    raw.c.ts,
                    raw.c.interval_s,
                    raw.c.model,
                    raw.c.inference_count,
                    raw.c.error_count,
                    raw.c.dropped,
                    raw.c.latency_ms,
                    raw.c.confidence_histogram,
                )
                .where(raw.c.received_at < cutoff)
                .order_by(raw.c.device_id, raw.c.seq)
                .limit(self.batch_size)
            ).all()
            if not rows:
                return 0, 0
            buckets: dict[tuple[str, datetime, str, str], _Bucket] = {}
            for row in rows:
                model = row.model if isinstance(row.model, dict) else {}
                key = (
                    row.device_id,
                    row.ts.replace(minute=0, second=0, microsecond=0),
                    str(model.get("name") or ""),
                    str(model.get("version") or ""),
                )
                _add(buckets.setdefault(key, _Bucket()), row._mapping)
            _merge_into(conn, hourly, buckets)
            keys = [(row.device_id, row.seq) for row in rows]
            conn.execute(delete(raw).where(tuple_(raw.c.device_id, raw.c.seq).in_(keys)))
            # A shadow report lives as long as its raw telemetry row (it is not rolled up).
            shadow = _table("shadow_reports")
            conn.execute(delete(shadow).where(tuple_(shadow.c.device_id, shadow.c.seq).in_(keys)))
        return len(rows), len(buckets)

    def _delete_hourly_batch(self, cutoff: datetime) -> int:
        hourly = _table("telemetry_hourly")
        pk = (hourly.c.device_id, hourly.c.hour, hourly.c.model_name, hourly.c.model_version)
        with self.engine.begin() as conn:
            keys = [
                tuple(row)
                for row in conn.execute(
                    select(*pk).where(hourly.c.hour < cutoff).limit(self.batch_size)
                ).all()
            ]
            if keys:
                conn.execute(delete(hourly).where(tuple_(*pk).in_(keys)))
        return len(keys)

    def _delete_audit_batch(self, cutoff: datetime) -> int:
        audit = _table("audit_log")
        with self.engine.begin() as conn:
            ids = [
                row.id
                for row in conn.execute(
                    select(audit.c.id).where(audit.c.ts < cutoff).limit(self.batch_size)
                ).all()
            ]
            if ids:
                conn.execute(delete(audit).where(audit.c.id.in_(ids)))
        return len(ids)

    def _delete_sample_batch(self, cutoff: datetime) -> int:
        from fleet_server.services.samples import delete_samples

        assert self.store is not None
        sample = _table("sample")
        with self.engine.connect() as conn:
            ids = [
                row.id
                for row in conn.execute(
                    select(sample.c.id).where(sample.c.received_at < cutoff).limit(self.batch_size)
                ).all()
            ]
        with Session(self.engine) as session:
            return delete_samples(session=session, store=self.store, ids=ids)


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _add(bucket: _Bucket, row: Any) -> None:
    bucket.samples += 1
    bucket.interval_s += float(row["interval_s"])
    bucket.inference_count += int(row["inference_count"])
    bucket.error_count += int(row["error_count"])
    bucket.dropped += int(row["dropped"])
    latency = row["latency_ms"] if isinstance(row["latency_ms"], dict) else {}
    if isinstance(latency.get("p50"), int | float):
        bucket.p50_sum += float(latency["p50"])
        bucket.p50_samples += 1
    bucket.p95_max = _max(bucket.p95_max, latency.get("p95"))
    bucket.p99_max = _max(bucket.p99_max, latency.get("p99"))
    histogram = row["confidence_histogram"]
    if isinstance(histogram, list):
        bucket.histogram = _sum_bins(bucket.histogram, histogram)


def _max(current: float | None, value: Any) -> float | None:
    if not isinstance(value, int | float):
        return current
    return float(value) if current is None else max(current, float(value))


def _sum_bins(a: Iterable[Any], b: Iterable[Any]) -> list[int]:
    """Bin-wise sum; the shorter histogram counts as zeros past its end."""
    left = [int(x) for x in a]
    right = [int(x) for x in b]
    if len(left) < len(right):
        left, right = right, left
    return [x + (right[i] if i < len(right) else 0) for i, x in enumerate(left)]


def _merge_into(
    conn: Connection, hourly: Table, buckets: dict[tuple[str, datetime, str, str], _Bucket]
) -> None:
    """Insert each bucket, or fold it into the hourly row already there (an hour whose raw
    rows were split between runs or batches)."""
    pk = (hourly.c.device_id, hourly.c.hour, hourly.c.model_name, hourly.c.model_version)
    existing = {
        (row.device_id, row.hour, row.model_name, row.model_version): row._mapping
        for row in conn.execute(
            select(hourly).where(
                or_(
                    *(
                        and_(*(column == value for column, value in zip(pk, key, strict=True)))
                        for key in buckets
                    )
                )
            )
        ).all()
    }
    for key, bucket in buckets.items():
        old = existing.get(key)
        if old is None:
            conn.execute(insert(hourly).values(**_values(key, bucket)))
            continue
        merged = _Bucket(
            samples=int(old["samples"]) + bucket.samples,
            interval_s=float(old["interval_s"]) + bucket.interval_s,
            inference_count=int(old["inference_count"]) + bucket.inference_count,
            error_count=int(old["error_count"]) + bucket.error_count,
            dropped=int(old["dropped"]) + bucket.dropped,
            p50_sum=(old["latency_p50_mean"] or 0.0) * int(old["latency_p50_samples"])
            + bucket.p50_sum,
            p50_samples=int(old["latency_p50_samples"]) + bucket.p50_samples,
            p95_max=_max(bucket.p95_max, old["latency_p95_max"]),
            p99_max=_max(bucket.p99_max, old["latency_p99_max"]),
            histogram=_sum_bins(old["confidence_histogram"] or [], bucket.histogram),
        )
        values = _values(key, merged)
        conn.execute(
            update(hourly)
            .where(*(column == value for column, value in zip(pk, key, strict=True)))
            .values({k: v for k, v in values.items() if k not in {c.name for c in pk}})
        )


def _values(key: tuple[str, datetime, str, str], bucket: _Bucket) -> dict[str, Any]:
    device_id, hour, model_name, model_version = key
    return {
        "device_id": device_id,
        "hour": hour,
        "model_name": model_name,
        "model_version": model_version,
        "samples": bucket.samples,
        "interval_s": bucket.interval_s,
        "inference_count": bucket.inference_count,
        "error_count": bucket.error_count,
        "dropped": bucket.dropped,
        "latency_p50_mean": bucket.p50_sum / bucket.p50_samples if bucket.p50_samples else None,
        "latency_p50_samples": bucket.p50_samples,
        "latency_p95_max": bucket.p95_max,
        "latency_p99_max": bucket.p99_max,
        "confidence_histogram": bucket.histogram,
    }
