"""Captured samples (hard examples a device uploads), their labels, the capture policy per
model (or version) and each device's daily upload budget.

One row per uploaded sample; the content lives in the artifact store under
``samples/<sha256>`` and is shared by every row with the same sha256 (deduplicated). A label
is part of the sample row (one current label per sample; who set it and when): a class
``label`` for classifiers, ``boxes`` for detectors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from fleet_server.models.types import UTCDateTime, utcnow

#: ``capture_policy.model_version`` of the policy of a whole model name (any version).
ALL_VERSIONS = ""


class Sample(SQLModel, table=True):
    """One uploaded sample. ``(device_id, sample_id)`` is the idempotency key of an upload."""

    __tablename__ = "sample"
    __table_args__ = (
        sa.UniqueConstraint("device_id", "sample_id", name="uq_sample_device_sample"),
        # Listing filters, each with ``id`` last so a filtered page is one index range scan
        # in id order (cursor paging).
        sa.Index("ix_sample_model_version_id", "model_name", "model_version", "id"),
        sa.Index("ix_sample_device_id_id", "device_id", "id"),
        sa.Index("ix_sample_reason_id", "reason", "id"),
        sa.Index("ix_sample_labelled_id", "labelled", "id"),
        sa.Index("ix_sample_captured_at", "captured_at"),
        sa.Index("ix_sample_received_at", "received_at"),
        sa.Index("ix_sample_sha256", "sha256"),
    )

    id: int | None = Field(default=None, primary_key=True, description="Server id.")
    sample_id: str = Field(max_length=64, description="The device's id of the sample.")
    device_id: str = Field(max_length=63, description="Device that captured it.")
    model_name: str = Field(max_length=63, description="Model that ran on the input.")
    model_version: str = Field(max_length=63, description="Its version.")
    reason: str = Field(max_length=32, description="Why it was captured (CaptureReason).")
    captured_at: datetime = Field(sa_type=UTCDateTime, description="When the device captured it.")
    received_at: datetime = Field(
        default_factory=utcnow, sa_type=UTCDateTime, description="When the server stored it."
    )
    confidence: float | None = Field(default=None, description="Top-1 score.")
    margin: float | None = Field(default=None, description="Top-1 minus top-2 score.")
    predicted: str | None = Field(
        default=None, max_length=200, description="Top-1 label or class index."
    )
    outputs: list[float] = Field(
        default_factory=list, sa_type=sa.JSON, description="Top-k scores or raw outputs."
    )
    input_score: float | None = Field(default=None, description="Outside-reference score.")
    input_stats: dict[str, Any] | None = Field(
        default=None, sa_type=sa.JSON, description="InputStats of this one sample."
    )
    content_type: str = Field(max_length=32, description="'image/jpeg' or 'application/x-npy'.")
    sha256: str = Field(max_length=64, description="SHA-256 of the content.")
    size: int = Field(sa_type=sa.BigInteger, description="Content size in bytes.")
    labelled: bool = Field(default=False, description="A label or boxes are set.")
    label: str | None = Field(default=None, max_length=200, description="Class label.")
    boxes: list[dict[str, Any]] | None = Field(
        default=None, sa_type=sa.JSON, description="Boxes {label, x1, y1, x2, y2} (pixels)."
    )
    labelled_by: str | None = Field(default=None, max_length=64, description="Who labelled it.")
    labelled_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="When it was labelled."
    )


class CapturePolicyRow(SQLModel, table=True):
    """The capture policy of a model name (``model_version`` = ``ALL_VERSIONS``) or of one
    version, which overrides the name's whole (no field-by-field merge)."""

    __tablename__ = "capture_policy"

    model_name: str = Field(primary_key=True, max_length=63, description="Model name.")
    model_version: str = Field(
        primary_key=True, max_length=63, description="Version, or '' for the whole model."
    )
    policy: dict[str, Any] = Field(sa_type=sa.JSON, description="The CapturePolicy, as JSON.")
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(max_length=64, description="Who set it.")


class SampleBudget(SQLModel, table=True):
    """What a device uploaded on one UTC day (counted when stored; deletions do not refund)."""

    __tablename__ = "sample_budget"

    device_id: str = Field(primary_key=True, max_length=63)
    day: str = Field(primary_key=True, max_length=10, description="UTC date, YYYY-MM-DD.")
    count: int = Field(default=0, sa_type=sa.BigInteger, description="Samples stored.")
    bytes: int = Field(default=0, sa_type=sa.BigInteger, description="Content bytes stored.")
