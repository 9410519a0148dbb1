"""Devices: registration, what they report (state, status) and what the server wants."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from edgefleet.contract.pydantic_types import DeviceId, ModelName, ModelVersion
from fleet_server.models.types import UTCDateTime, utcnow

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def _check_tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid tag {tag[:80]!r}: must match {_TAG.pattern}")
    return sorted(set(tags))


Tags = Annotated[list[str], AfterValidator(_check_tags)]


class DeviceBase(SQLModel):
    device_class: str | None = Field(
        default=None, max_length=64, description="Hardware class, e.g. 'rpi4'."
    )
    tags: Tags = Field(
        default_factory=list, max_length=32, sa_type=sa.JSON, description="Labels for targeting."
    )


class DeviceCreate(DeviceBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    device_id: DeviceId = Field(description="One MQTT topic level: [a-z0-9][a-z0-9_-]{0,62}.")


class Device(DeviceBase, table=True):
    device_id: str = Field(primary_key=True, max_length=63)
    token_hash: str = Field(max_length=64, unique=True, description="sha256 of the token.")
    mqtt_password_hash: str | None = Field(
        default=None,
        max_length=200,
        description="The token hashed in Mosquitto's password-file format (PBKDF2-SHA512), for "
        "`edgefleet server acl`; None for devices registered before migration 0002.",
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Reported by the device (status and state messages).
    online: bool = Field(default=False)
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status_ts: datetime | None = Field(default=None, sa_type=UTCDateTime)
    state_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    phase: str | None = Field(default=None, max_length=32)
    running_name: str | None = Field(default=None, max_length=63)
    running_version: str | None = Field(default=None, max_length=63)
    reported_desired_name: str | None = Field(default=None, max_length=63)
    reported_desired_version: str | None = Field(default=None, max_length=63)
    agent_version: str | None = Field(default=None, max_length=64)
    last_error: str | None = Field(default=None, max_length=2000)
    telemetry_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    last_telemetry: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # Decided by the server (assignments).
    desired_name: str | None = Field(default=None, max_length=63)
    desired_version: str | None = Field(default=None, max_length=63)
    desired_revision: int = Field(default=0, sa_type=sa.BigInteger)
    desired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decommissioned_at: datetime | None = Field(
        default=None,
        sa_type=UTCDateTime,
        description="When an operator removed it: its token and broker login are revoked, it no "
        "longer counts in the fleet, rollouts skip it, its messages are refused; its history "
        "stays for the audit.",
    )
    # Pinned by an operator: ordinary assignments and rollouts leave the device alone.
    pinned_name: str | None = Field(default=None, max_length=63)
    pinned_version: str | None = Field(default=None, max_length=63)


class ModelRefPublic(BaseModel):
    name: str
    version: str


class DevicePublic(DeviceBase):
    device_id: str
    online: bool
    last_seen: datetime | None
    phase: str | None
    running: ModelRefPublic | None
    desired: ModelRefPublic | None
    agent_version: str | None
    last_error: str | None
    last_telemetry: dict[str, Any] | None
    pinned: ModelRefPublic | None = Field(
        default=None, description="The version the device is pinned to (assignments skip it)."
    )
    decommissioned_at: datetime | None = Field(
        default=None, description="When it was removed (None: in the fleet)."
    )

    @classmethod
    def of(cls, device: Device) -> DevicePublic:
        return cls(
            device_id=device.device_id,
            device_class=device.device_class,
            tags=list(device.tags),
            online=device.online,
            last_seen=device.last_seen,
            phase=device.phase,
            running=_ref(device.running_name, device.running_version),
            desired=_ref(device.desired_name, device.desired_version),
            agent_version=device.agent_version,
            last_error=device.last_error,
            last_telemetry=device.last_telemetry,
            pinned=_ref(device.pinned_name, device.pinned_version),
            decommissioned_at=device.decommissioned_at,
        )


class TagsUpdate(BaseModel):
    """Tags to add and to remove (removal wins when a tag is in both)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"add": ["canary"], "remove": ["lab"]}]}
    )

    add: Tags = PydanticField(default_factory=list, max_length=32, description="Tags to add.")
    remove: Tags = PydanticField(default_factory=list, max_length=32, description="Tags to remove.")


class PinRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"model": "digits", "version": "1.0.0"}]}
    )

    model: ModelName = PydanticField(description="Model name.")
    version: ModelVersion = PydanticField(description="Model version.")


class DeviceCreated(DeviceBase):
    device_id: str
    token: str = Field(description="The device's bearer token; shown once.")


def _ref(name: str | None, version: str | None) -> ModelRefPublic | None:
    if name is None or version is None:
        return None
    return ModelRefPublic(name=name, version=version)
