"""Drift detection state: telemetry summed into 5-minute buckets per model version, the current
verdict of every detector per version, and the alerts (with their retraining trigger)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Field, SQLModel

from fleet_server.models.types import UTCDateTime


class DriftBucket(SQLModel, table=True):
    """What one model version did across the fleet in one bucket of time (server clock)."""

    __tablename__ = "drift_bucket"

    model_name: str = Field(primary_key=True, max_length=63)
    model_version: str = Field(primary_key=True, max_length=63)
    bucket_start: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    intervals: int = Field(default=0, sa_type=sa.BigInteger, description="Telemetry rows.")
    inferences: int = Field(default=0, sa_type=sa.BigInteger)
    errors: int = Field(default=0, sa_type=sa.BigInteger)
    confidence_histogram: list[int] = Field(default_factory=list, sa_type=sa.JSON)


class DriftInputBucket(SQLModel, table=True):
    """What one model version's inputs and predictions looked like in one bucket of time, for the
    whole fleet (``segment`` '') and per device class ('class=pi4') and tag ('tag=dock-3')."""

    __tablename__ = "drift_input_bucket"

    model_name: str = Field(primary_key=True, max_length=63)
    model_version: str = Field(primary_key=True, max_length=63)
    segment: str = Field(primary_key=True, max_length=72, description="'' | class=X | tag=Y")
    bucket_start: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    input_samples: int = Field(default=0, sa_type=sa.BigInteger, description="Inputs sampled.")
    outside_reference: int = Field(default=0, sa_type=sa.BigInteger)
    input_histograms: list[list[int]] = Field(
        default_factory=list, sa_type=sa.JSON, description="Per channel, on the manifest's bins."
    )
    class_counts: dict[str, int] = Field(default_factory=dict, sa_type=sa.JSON)


class DriftCursor(SQLModel, table=True):
    """How far telemetry has been summed into buckets (by ``received_at``)."""

    __tablename__ = "drift_cursor"

    name: str = Field(primary_key=True, max_length=32)
    position: datetime = Field(sa_type=UTCDateTime)


class DriftStatus(SQLModel, table=True):
    """The latest verdict of one detector on one model version."""

    __tablename__ = "drift_status"

    model_name: str = Field(primary_key=True, max_length=63)
    model_version: str = Field(primary_key=True, max_length=63)
    detector: str = Field(primary_key=True, max_length=96, description="input_psi[class=pi4]")
    status: str = Field(max_length=16, description="ok | drift | insufficient")
    value: float | None = Field(default=None)
    threshold: float
    samples: int = Field(sa_type=sa.BigInteger, description="Inferences in the window.")
    reference_samples: int = Field(sa_type=sa.BigInteger)
    since: datetime = Field(sa_type=UTCDateTime, description="When it entered this status.")
    evaluated_at: datetime = Field(sa_type=UTCDateTime)
    detail: str = Field(default="", max_length=500)


class DriftAlert(SQLModel, table=True):
    """A detector that went from ok to drift; closed when it is ok again."""

    __tablename__ = "drift_alert"

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=63, index=True)
    model_version: str = Field(max_length=63)
    detector: str = Field(max_length=96)
    value: float | None = Field(default=None)
    threshold: float
    samples: int = Field(sa_type=sa.BigInteger)
    detail: str = Field(default="", max_length=500, description="What fired, and why.")
    opened_at: datetime = Field(sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    trigger_status: str = Field(
        default="none", max_length=16, description="none | sent | failed | cooldown"
    )
    trigger_detail: str = Field(default="", max_length=1000)
    triggered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DriftStatusPublic(BaseModel):
    model: str
    version: str
    detector: str
    status: str
    value: float | None
    threshold: float
    samples: int
    reference_samples: int
    since: datetime
    evaluated_at: datetime
    detail: str

    @classmethod
    def of(cls, row: DriftStatus) -> DriftStatusPublic:
        return cls(
            model=row.model_name,
            version=row.model_version,
            detector=row.detector,
            status=row.status,
            value=row.value,
            threshold=row.threshold,
            samples=row.samples,
            reference_samples=row.reference_samples,
            since=row.since,
            evaluated_at=row.evaluated_at,
            detail=row.detail,
        )


class DriftAlertPublic(BaseModel):
    id: int
    model: str
    version: str
    detector: str
    value: float | None
    threshold: float
    samples: int
    detail: str
    opened_at: datetime
    closed_at: datetime | None
    trigger_status: str
    trigger_detail: str
    triggered_at: datetime | None

    @classmethod
    def of(cls, row: DriftAlert) -> DriftAlertPublic:
        assert row.id is not None
        return cls(
            id=row.id,
            model=row.model_name,
            version=row.model_version,
            detector=row.detector,
            value=row.value,
            threshold=row.threshold,
            samples=row.samples,
            detail=row.detail,
            opened_at=row.opened_at,
            closed_at=row.closed_at,
            trigger_status=row.trigger_status,
            trigger_detail=row.trigger_detail,
            triggered_at=row.triggered_at,
        )


class DriftReport(BaseModel):
    statuses: list[DriftStatusPublic]
    alerts: list[DriftAlertPublic]
