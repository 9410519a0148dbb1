"""Retraining pipeline runs and their steps: one run per trigger, one row per step it ran.

A run is driven by the server (``source`` ``pipeline``: snapshot → train → convert → push →
rollout → watch) or by an external engine that reports its steps through the API (``source``
``webhook``). ``active_model`` holds the model name while the run is not finished and NULL
after: its unique index is what keeps one run per model at a time on every database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Field, SQLModel

from fleet_server.models.types import UTCDateTime

#: Run states; the last three are terminal.
RUN_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_RUN_STATES = ("queued", "running")
#: Step states.
STEP_STATES = ("running", "succeeded", "failed", "cancelled")
#: Most bytes of a step's output kept (the tail; the head says what started).
MAX_STEP_LOG = 64 * 1024


class PipelineRun(SQLModel, table=True):
    __tablename__ = "pipeline_runs"

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=63, index=True)
    active_model: str | None = Field(
        default=None,
        max_length=63,
        unique=True,
        index=True,
        description="model_name while not finished",
    )
    source: str = Field(max_length=16, description="pipeline | webhook")
    state: str = Field(max_length=16, index=True)
    step: str | None = Field(default=None, max_length=32, description="Current or last step.")
    trigger: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    parent_version: str | None = Field(default=None, max_length=63)
    candidate_version: str | None = Field(default=None, max_length=63)
    dataset_sha256: str | None = Field(default=None, max_length=64)
    rollout_id: int | None = Field(default=None)
    alert_id: int | None = Field(default=None, description="The alert a failure opened.")
    context: dict[str, Any] = Field(
        default_factory=dict, sa_type=sa.JSON, description="What the steps pass on."
    )
    error: str = Field(default="", max_length=1000)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PipelineStep(SQLModel, table=True):
    __tablename__ = "pipeline_steps"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="pipeline_runs.id", index=True)
    name: str = Field(max_length=32)
    state: str = Field(max_length=16)
    attempt: int = Field(default=1, description="2+ when a restart ran the step again.")
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    detail: str = Field(default="", max_length=1000)
    numbers: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    log: str = Field(default="", sa_type=sa.Text, description=f"Last {MAX_STEP_LOG} bytes.")


class PipelineStepPublic(BaseModel):
    name: str
    state: str
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    detail: str
    numbers: dict[str, Any]
    log: str | None = None


class PipelineRunPublic(BaseModel):
    id: int
    model_name: str
    source: str
    state: str
    step: str | None
    trigger: dict[str, Any]
    parent_version: str | None
    candidate_version: str | None
    dataset_sha256: str | None
    rollout_id: int | None
    alert_id: int | None
    error: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[PipelineStepPublic] = []
