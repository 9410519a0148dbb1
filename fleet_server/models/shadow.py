"""Shadow models on devices (issue #14): which shadow a device should run, and what it reported.

* ``device_shadow`` — one row per device with a shadow: read by the desired-state builder
  (:func:`fleet_server.services.desired.desired_state`), set by operators (and later by the
  rollout shadow stage) through :mod:`fleet_server.services.shadow`.
* ``shadow_reports`` — one row per telemetry message carrying a ``ShadowReport``, keyed like
  telemetry by ``(device_id, seq)`` so a redelivered message is stored once (same ingest
  batch, same ``INSERT ... ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from edgefleet.contract.pydantic_types import ModelName, ModelVersion
from fleet_server.models.types import UTCDateTime, utcnow


class DeviceShadow(SQLModel, table=True):
    """The shadow model a device is asked to run beside its serving model."""

    __tablename__ = "device_shadow"

    device_id: str = Field(
        primary_key=True, max_length=63, foreign_key="device.device_id", ondelete="CASCADE"
    )
    model_name: str = Field(max_length=63, description="Shadow model name.")
    model_version: str = Field(max_length=63, description="Shadow model version.")
    sample_rate: float = Field(description="Share of served inputs offered to the shadow.")
    cpu_budget: float = Field(description="Thread CPU time allowed, fraction of one core.")
    set_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ShadowReportRow(SQLModel, table=True):
    """One device's shadow figures over one telemetry interval."""

    __tablename__ = "shadow_reports"
    __table_args__ = (sa.Index("ix_shadow_reports_model", "model_name", "model_version", "ts"),)

    device_id: str = Field(
        primary_key=True, max_length=63, foreign_key="device.device_id", ondelete="CASCADE"
    )
    seq: int = Field(primary_key=True, sa_type=sa.BigInteger, description="Telemetry seq.")
    ts: datetime = Field(sa_type=UTCDateTime, description="When the device sent it.")
    model_name: str = Field(max_length=63, description="Shadow model name.")
    model_version: str = Field(max_length=63, description="Shadow model version.")
    paired: int = Field(sa_type=sa.BigInteger, description="Inputs both models ran on.")
    skipped: int = Field(sa_type=sa.BigInteger, description="Sampled inputs not run.")
    disagreements: int = Field(sa_type=sa.BigInteger, description="Paired inputs that disagreed.")
    figures: dict[str, Any] = Field(
        default_factory=dict,
        sa_type=sa.JSON,
        description="The rest of the ShadowReport: latencies, CPU times, agreement figures, "
        "errors, serving model.",
    )


class ShadowRequest(BaseModel):
    """``PUT /api/v1/devices/{id}/shadow``: the shadow to run on a device."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "digits", "version": "2.0.0"}]},
    )

    model: ModelName = PydanticField(description="Shadow model name.")
    version: ModelVersion = PydanticField(description="Shadow model version.")
    sample_rate: float = PydanticField(
        default=0.1, gt=0, le=1, description="Share of served inputs offered to the shadow."
    )
    cpu_budget: float = PydanticField(
        default=0.25, gt=0, le=1, description="Thread CPU time allowed, fraction of one core."
    )


class DeviceShadowPublic(BaseModel):
    device_id: str = PydanticField(description="The device.")
    model: str = PydanticField(description="Shadow model name.")
    version: str = PydanticField(description="Shadow model version.")
    sample_rate: float = PydanticField(description="Share of served inputs offered.")
    cpu_budget: float = PydanticField(description="Thread CPU time allowed (one core = 1).")
    set_at: datetime = PydanticField(description="When it was set.")

    @classmethod
    def of(cls, row: DeviceShadow) -> DeviceShadowPublic:
        return cls(
            device_id=row.device_id,
            model=row.model_name,
            version=row.model_version,
            sample_rate=row.sample_rate,
            cpu_budget=row.cpu_budget,
            set_at=row.set_at,
        )


class ShadowGroup(BaseModel):
    """Shadow figures summed over a set of devices (the fleet, or one device class)."""

    devices: int = PydanticField(description="Devices that reported.")
    reports: int = PydanticField(description="Telemetry intervals summed.")
    paired: int = PydanticField(description="Inputs both models ran on.")
    skipped: int = PydanticField(description="Sampled inputs not run (busy or over budget).")
    disagreements: int = PydanticField(description="Paired inputs that disagreed.")
    agreement: float | None = PydanticField(
        description="Share of paired inputs that agreed (paired-weighted over devices)."
    )
    serving_p95_ms: float | None = PydanticField(
        description="Serving p95 latency, the paired-weighted mean of the reports' p95."
    )
    shadow_p95_ms: float | None = PydanticField(
        description="Shadow p95 latency, the paired-weighted mean of the reports' p95."
    )
    latency_ratio_p95: float | None = PydanticField(
        description="shadow_p95_ms / serving_p95_ms on the same inputs (> 1: shadow slower)."
    )
    cpu_ratio: float | None = PydanticField(
        description="Shadow over serving thread CPU time on the same inputs."
    )
    errors: dict[str, int] = PydanticField(description="Shadow failures by kind.")


class ShadowSummary(BaseModel):
    """``GET /api/v1/models/{name}/{version}/shadow``."""

    model: str
    version: str
    fleet: ShadowGroup = PydanticField(description="Every device that reported.")
    device_classes: dict[str, ShadowGroup] = PydanticField(
        description="By device class ('' for devices without one)."
    )
