"""Telemetry and event rows, one per message; (device_id, seq) is the primary key so a
redelivered QoS 1 message is stored once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from fleet_server.models.types import UTCDateTime


class TelemetryBase(SQLModel):
    device_id: str = Field(
        primary_key=True, max_length=63, foreign_key="device.device_id", ondelete="CASCADE"
    )
    seq: int = Field(primary_key=True, sa_type=sa.BigInteger, description="Device sequence no.")
    ts: datetime = Field(sa_type=UTCDateTime, description="When the device sent it.")
    received_at: datetime = Field(sa_type=UTCDateTime, description="When ingest stored it.")
    interval_s: float = Field(description="Length of the summarised interval.")
    model: dict[str, str] | None = Field(default=None, sa_type=sa.JSON)
    inference_count: int = Field(sa_type=sa.BigInteger)
    error_count: int = Field(sa_type=sa.BigInteger)
    errors: dict[str, int] = Field(default_factory=dict, sa_type=sa.JSON)
    latency_ms: dict[str, float | None] | None = Field(default=None, sa_type=sa.JSON)
    dropped: int = Field(default=0, sa_type=sa.BigInteger)
    system: dict[str, float] = Field(default_factory=dict, sa_type=sa.JSON)
    confidence_histogram: list[int] = Field(default_factory=list, sa_type=sa.JSON)
    inputs: dict[str, Any] | None = Field(
        default=None,
        sa_type=sa.JSON,
        description="The sampled inputs' statistics (contract InputStats); None from a v1 agent.",
    )
    class_counts: dict[str, int] = Field(
        default_factory=dict, sa_type=sa.JSON, description="Predicted top-1 class counts."
    )


class TelemetryRow(TelemetryBase, table=True):
    __tablename__ = "telemetry"
    #: The dashboard's charts select a window of server time (migration 0017).
    __table_args__ = (sa.Index("ix_telemetry_received_at", "received_at"),)


class TelemetryPublic(TelemetryBase):
    """A stored telemetry row as the API returns it."""


class EventBase(SQLModel):
    device_id: str = Field(
        primary_key=True, max_length=63, foreign_key="device.device_id", ondelete="CASCADE"
    )
    seq: int = Field(primary_key=True, sa_type=sa.BigInteger)
    ts: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(sa_type=UTCDateTime)
    event: str = Field(max_length=64)
    model: dict[str, str] | None = Field(default=None, sa_type=sa.JSON)
    progress: float | None = Field(default=None)
    detail: str = Field(default="", max_length=2000)


class EventRow(EventBase, table=True):
    __tablename__ = "event"


class EventPublic(EventBase):
    """A stored event row as the API returns it."""


class TelemetryHourlyRow(SQLModel, table=True):
    """Raw telemetry older than ``telemetry_raw_days``, rolled up per device, hour and model
    (:mod:`fleet_server.services.retention`). ``model_name``/``model_version`` are '' for
    telemetry sent with no model loaded."""

    __tablename__ = "telemetry_hourly"

    device_id: str = Field(
        primary_key=True, max_length=63, foreign_key="device.device_id", ondelete="CASCADE"
    )
    hour: datetime = Field(primary_key=True, sa_type=UTCDateTime, description="Hour start (ts).")
    model_name: str = Field(primary_key=True, max_length=63)
    model_version: str = Field(primary_key=True, max_length=63)
    samples: int = Field(sa_type=sa.BigInteger, description="Raw rows rolled into this one.")
    interval_s: float = Field(description="Sum of the raw rows' intervals.")
    inference_count: int = Field(sa_type=sa.BigInteger)
    error_count: int = Field(sa_type=sa.BigInteger)
    dropped: int = Field(sa_type=sa.BigInteger)
    latency_p50_mean: float | None = Field(default=None, description="Mean of the raw p50s.")
    latency_p50_samples: int = Field(
        default=0, sa_type=sa.BigInteger, description="Raw rows with a p50 (merging weight)."
    )
    latency_p95_max: float | None = Field(default=None)
    latency_p99_max: float | None = Field(default=None)
    confidence_histogram: list[int] = Field(
        default_factory=list, sa_type=sa.JSON, description="Bin-wise sum of the raw histograms."
    )


class TelemetryRollupRow(SQLModel, table=True):
    """Raw telemetry summed per 5-minute bucket of server time (``received_at``), model, version
    and device class (:mod:`fleet_server.services.rollup`): what a chart of a day or a week reads
    instead of millions of raw rows. Every column merges exactly (sums, counts, a max), so a
    chart bucket made of these equals the same bucket summed from the raw rows. ``model_name``,
    ``model_version`` and ``device_class`` are '' when the telemetry or device had none."""

    __tablename__ = "telemetry_rollup"

    model_name: str = Field(primary_key=True, max_length=63)
    bucket_s: int = Field(
        primary_key=True, sa_type=sa.BigInteger, description="Bucket start, Unix seconds."
    )
    model_version: str = Field(primary_key=True, max_length=63)
    device_class: str = Field(primary_key=True, max_length=64)
    intervals: int = Field(sa_type=sa.BigInteger, description="Raw rows (device intervals).")
    inferences: int = Field(sa_type=sa.BigInteger)
    errors: int = Field(sa_type=sa.BigInteger)
    p95_sum: float | None = Field(default=None, description="Sum of the rows' p95 latency (ms).")
    p95_count: int = Field(sa_type=sa.BigInteger, description="Rows with a p95 latency.")
    p95_max: float | None = Field(default=None, description="Worst row p95 latency (ms).")


class TelemetryRollupMark(SQLModel, table=True):
    """How far the roll-up has gone: buckets before ``until_s`` are in ``telemetry_rollup``
    (one row, ``name`` 'telemetry')."""

    __tablename__ = "telemetry_rollup_mark"

    name: str = Field(primary_key=True, max_length=32)
    until_s: int = Field(sa_type=sa.BigInteger, description="End of the rolled-up buckets.")
