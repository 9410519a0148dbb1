"""Rollouts: one row per rollout, one per touched device, one per decision the engine took.

Everything the rollout engine knows lives here, so a restarted server (or another replica that
takes over the driver lease) carries on from exactly where the last tick left off.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from fleet_server.models.types import UTCDateTime, utcnow

#: Per-device status inside a rollout.
DEVICE_STATUSES = (
    "pending",  # in the rollout, not yet assigned
    "assigned",  # desired state set to the new version
    "committed",  # the device reported it committed the new version
    "failed",  # update failed, rolled back by the device's probation, or timed out
    "skipped",  # already on the target, pinned, or left out by the abort
    "reverting",  # the abort set its desired state back to the previous version
    "reverted",  # the device reported running the previous version again
)
FINISHED_STATUSES = ("committed", "failed")


class Rollout(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    model_name: str = Field(max_length=63)
    model_version: str = Field(max_length=63)
    selector: dict[str, Any] = Field(sa_type=sa.JSON)
    strategy: dict[str, Any] = Field(sa_type=sa.JSON)
    gates: dict[str, Any] = Field(sa_type=sa.JSON)
    #: A :class:`~fleet_server.services.rollouts.state.RolloutState` value, changed only by
    #: ``state.transition`` (the one table of allowed steps).
    state: str = Field(max_length=32, index=True)
    #: Index into the stage plan (0 = canary).
    stage: int = Field(default=0)
    stage_started_at: datetime = Field(sa_type=UTCDateTime)
    #: When every device of the current stage had finished (the soak starts then).
    stage_finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Bumped by every state change; a change is written only if it still matches (a tick and
    #: an operator action, or two drivers, can never both apply one).
    revision: int = Field(default=0, sa_type=sa.BigInteger)
    reason: str | None = Field(default=None, max_length=2000)
    created_by: str = Field(default="operator", max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The newest gate evaluation (for show/watch); decisions keep the ones that mattered.
    last_evaluation: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)


class RolloutDevice(SQLModel, table=True):
    __tablename__ = "rollout_device"

    rollout_id: int = Field(
        primary_key=True, foreign_key="rollout.id", ondelete="CASCADE", sa_type=sa.Integer
    )
    device_id: str = Field(
        primary_key=True, max_length=63, foreign_key="device.device_id", ondelete="CASCADE"
    )
    #: Position in the rollout's (shuffled) order; stage k covers positions < its target count.
    position: int
    status: str = Field(max_length=16, index=True)
    #: What the device ran (or was meant to run) before; the abort goes back to it.
    previous_name: str | None = Field(default=None, max_length=63)
    previous_version: str | None = Field(default=None, max_length=63)
    device_class: str | None = Field(default=None, max_length=64)
    joined_late: bool = Field(default=False)
    stage: int | None = Field(default=None, description="Stage in which it was assigned.")
    assigned_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    detail: str | None = Field(default=None, max_length=500)


class RolloutDecision(SQLModel, table=True):
    __tablename__ = "rollout_decision"

    id: int | None = Field(default=None, primary_key=True)
    rollout_id: int = Field(
        foreign_key="rollout.id", ondelete="CASCADE", index=True, sa_type=sa.Integer
    )
    ts: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    stage: int
    action: str = Field(max_length=32)
    actor: str = Field(max_length=100)
    reason: str = Field(default="", max_length=2000)
    #: The numbers that drove it: gate results, counts.
    evidence: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
