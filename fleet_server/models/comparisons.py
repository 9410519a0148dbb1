"""Stored comparisons of two versions of a model (``edgefleet fleet models compare``).

The operator's machine runs both versions on the same inputs and posts the result; the server
keeps it with the candidate version, checks its shape and bounds (the body is untrusted), and
reads three headline figures from it for ``rollouts create --require-compare``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from edgefleet.contract.pydantic_types import ModelVersion
from fleet_server.models.types import UTCDateTime, utcnow

#: Inputs listed as disagreeing most, at most.
MAX_DISAGREEMENTS = 50
#: Task-specific figures (``measures``), at most.
MAX_MEASURES = 32

Task = Literal["classification", "detection", "segmentation", "regression", "raw"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class DataSource(_Strict):
    kind: Literal["npz", "images", "fleet"] = PydanticField(
        description="An .npz, an image folder, or the fleet's labelled samples."
    )
    name: str = PydanticField(max_length=200, description="File or folder name (no path).")
    sha256: str = PydanticField(pattern=r"^[0-9a-f]{64}$", description="Hash of the inputs.")


class Scores(_Strict):
    accuracy: float = PydanticField(ge=0, le=1, description="Top-1 accuracy on the labels.")
    macro_f1: float = PydanticField(ge=0, le=1, description="Macro-averaged F1 over classes.")


class Labelled(_Strict):
    samples: int = PydanticField(ge=1, le=10_000_000, description="Labelled inputs compared.")
    baseline: Scores
    candidate: Scores
    accuracy_delta: float = PydanticField(ge=-1, le=1, description="candidate - baseline.")
    macro_f1_delta: float = PydanticField(ge=-1, le=1, description="candidate - baseline.")


class Latency(_Strict):
    baseline_ms: float = PydanticField(ge=0, le=3_600_000, description="Median, one row.")
    candidate_ms: float = PydanticField(ge=0, le=3_600_000, description="Median, one row.")
    ratio: float = PydanticField(ge=0, le=1e6, description="candidate_ms / baseline_ms.")
    runs: int = PydanticField(ge=1, le=10_000_000, description="Timed runs per version.")
    threads: int = PydanticField(ge=1, le=1024, description="Inference threads.")
    host: str = PydanticField(max_length=200, description="Where it was measured (hostname).")
    arch: str = PydanticField(max_length=64, description="CPU architecture, e.g. x86_64.")


class Disagreement(_Strict):
    index: int = PydanticField(ge=0, le=10_000_000, description="Row in the data source.")
    input: str = PydanticField(max_length=200, description="File name or 'row N'.")
    score: float = PydanticField(ge=0, le=1e12, description="How much the versions differ.")
    baseline: str = PydanticField(max_length=200, description="What the baseline said.")
    candidate: str = PydanticField(max_length=200, description="What the candidate said.")
    label: str | None = PydanticField(default=None, max_length=200, description="True label.")


class ComparisonCreate(_Strict):
    """What ``edgefleet fleet models compare`` posts for the candidate version."""

    baseline_version: ModelVersion = PydanticField(description="Version A, the one replaced.")
    task: Task
    samples: int = PydanticField(ge=1, le=10_000_000, description="Inputs both versions ran.")
    data: DataSource
    agreement: float = PydanticField(
        ge=0,
        le=1,
        description="The task's measure of agreement: top-1 agreement (classifier), matched-box "
        "F1 at IoU 0.5 (detector), mean mask IoU (segmenter), mean cosine similarity (raw).",
    )
    measures: dict[str, float] = PydanticField(
        max_length=MAX_MEASURES, description="The task's figures, e.g. mean_abs_conf_delta."
    )
    labelled: Labelled | None = PydanticField(default=None, description="When labels were given.")
    latency: Latency
    disagreements: list[Disagreement] = PydanticField(
        max_length=MAX_DISAGREEMENTS, description="The inputs where they disagree most."
    )

    @field_validator("measures")
    @classmethod
    def _measures(cls, value: dict[str, float]) -> dict[str, float]:
        for key, number in value.items():
            if not 0 < len(key) <= 64:
                raise ValueError("a measure name is 1-64 characters")
            _finite(number)
        return value


class ModelComparison(SQLModel, table=True):
    __tablename__ = "model_comparisons"

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=63)
    candidate_version: str = Field(max_length=63)
    baseline_version: str = Field(max_length=63)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = Field(max_length=100)
    agreement: float
    accuracy_delta: float | None = Field(default=None)
    latency_ratio: float
    result: dict[str, Any] = Field(sa_type=sa.JSON)

    __table_args__ = (
        sa.Index(
            "ix_model_comparisons_candidate", "model_name", "candidate_version", "baseline_version"
        ),
    )


class ComparisonPublic(BaseModel):
    id: int
    model: str
    candidate_version: str
    baseline_version: str
    created_at: datetime
    created_by: str
    result: dict[str, Any] = PydanticField(description="The comparison as posted.")

    @classmethod
    def of(cls, row: ModelComparison) -> ComparisonPublic:
        assert row.id is not None
        return cls(
            id=row.id,
            model=row.model_name,
            candidate_version=row.candidate_version,
            baseline_version=row.baseline_version,
            created_at=row.created_at,
            created_by=row.created_by,
            result=row.result,
        )


class ComparisonList(BaseModel):
    latest: ComparisonPublic | None = PydanticField(description="The newest, or none yet.")
    items: list[ComparisonPublic] = PydanticField(description="Newest first, at most 50.")
