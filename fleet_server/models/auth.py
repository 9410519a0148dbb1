"""Operator API tokens with roles, enrollment tokens and the audit log."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import pydantic
import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from edgefleet.contract.pydantic_types import DeviceId
from fleet_server.models.devices import Tags
from fleet_server.models.types import UTCDateTime, utcnow

#: A token name is what the audit log shows as the actor.
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Actor names the server uses itself; no API token may take them.
RESERVED_NAMES = frozenset({"bootstrap", "anonymous", "unknown-token", "enrollment"})
#: Longest an enrollment token may live.
MAX_ENROLLMENT_TTL_S = 30 * 24 * 3600
MAX_ENROLLMENT_USES = 10_000
#: Longest an API token may be issued for.
MAX_API_TOKEN_TTL_S = 2 * 366 * 24 * 3600
#: The audit row's ``detail`` JSON is cut to a marker above this size.
MAX_AUDIT_DETAIL_BYTES = 4096


class Role(StrEnum):
    """What an API token may do; each role can do everything the ones below it can."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def _check_name(name: str) -> str:
    if not _TOKEN_NAME.fullmatch(name):
        raise ValueError(f"must match {_TOKEN_NAME.pattern}")
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved")
    return name


TokenName = Annotated[str, AfterValidator(_check_name)]


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, description="Shown as the actor in the audit.")
    role: str = Field(max_length=16, description="viewer, operator or admin.")
    token_hash: str = Field(max_length=64, unique=True, description="sha256 of the token.")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = Field(max_length=80, description="Actor that created it.")
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="Refused from then on; None: never."
    )


class ApiTokenCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "ci-pipeline", "role": "operator"}]},
    )

    name: TokenName = pydantic.Field(description="Unique name; the audit log's actor.")
    role: Role = pydantic.Field(
        description="viewer (read), operator (change the fleet), admin (tokens)."
    )
    expires_in_s: int | None = pydantic.Field(
        default=None,
        ge=60,
        le=MAX_API_TOKEN_TTL_S,
        description="Seconds until it is refused (60 s to 2 years); omitted: it never expires.",
    )


class ApiTokenRotate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"expires_in_s": 86400}]}
    )

    expires_in_s: int | None = pydantic.Field(
        default=None,
        ge=60,
        le=MAX_API_TOKEN_TTL_S,
        description="Seconds the new secret lives; omitted: the old expiry is kept.",
    )


class ApiTokenPublic(BaseModel):
    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None = None

    @classmethod
    def of(cls, row: ApiToken) -> ApiTokenPublic:
        assert row.id is not None
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            created_at=row.created_at,
            created_by=row.created_by,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
        )


class ApiTokenCreated(ApiTokenPublic):
    token: str = pydantic.Field(description="The bearer token; shown once, stored hashed.")


class EnrollmentToken(SQLModel, table=True):
    __tablename__ = "enrollment_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, description="sha256 of the token.")
    device_class: str | None = Field(default=None, max_length=64)
    tags: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    uses: int = Field(description="How many devices it may enroll in all.")
    uses_left: int = Field(description="How many more devices it may enroll.")
    expires_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = Field(max_length=80)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    def state(self, now: datetime) -> EnrollmentState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.uses_left <= 0:
            return "used_up"
        return "active"


#: What an enrollment token can still do: only an ``active`` one enrolls a device.
EnrollmentState = Literal["active", "expired", "used_up", "revoked"]


class EnrollmentTokenCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"device_class": "rpi4", "tags": ["lab"], "expires_in_s": 86400, "uses": 20}
            ]
        },
    )

    device_class: str | None = pydantic.Field(
        default=None, max_length=64, description="Class given to every device it enrolls."
    )
    tags: Tags = pydantic.Field(
        default_factory=list, max_length=32, description="Tags given likewise."
    )
    expires_in_s: int = pydantic.Field(
        ge=60, le=MAX_ENROLLMENT_TTL_S, description="Seconds until it expires (≤ 30 days)."
    )
    uses: int = pydantic.Field(
        default=1, ge=1, le=MAX_ENROLLMENT_USES, description="Devices it may enroll (≤ 10000)."
    )


class EnrollmentTokenPublic(BaseModel):
    """An enrollment token as operators see it: never the token or its hash."""

    id: int
    device_class: str | None
    tags: list[str]
    uses: int
    uses_left: int
    expires_at: datetime
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    state: EnrollmentState = pydantic.Field(description="Only an active token enrolls.")

    @classmethod
    def of(cls, row: EnrollmentToken) -> EnrollmentTokenPublic:
        assert row.id is not None
        return cls(
            id=row.id,
            device_class=row.device_class,
            tags=list(row.tags),
            uses=row.uses,
            uses_left=row.uses_left,
            expires_at=row.expires_at,
            created_at=row.created_at,
            created_by=row.created_by,
            revoked_at=row.revoked_at,
            state=row.state(utcnow()),
        )


class EnrollmentTokenCreated(EnrollmentTokenPublic):
    token: str = pydantic.Field(description="The enrollment token; shown once, stored hashed.")


class EnrollRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"enrollment_token": "<token>", "device_id": "pi-kitchen"}]
        },
    )

    enrollment_token: str = pydantic.Field(
        min_length=1, max_length=200, description="From an operator."
    )
    device_id: DeviceId | None = pydantic.Field(
        default=None,
        description="Wanted id ([a-z0-9][a-z0-9_-]{0,62}); omitted: one is generated.",
    )
    device_class: str | None = pydantic.Field(
        default=None, max_length=64, description="Must match the token's class if it has one."
    )


class Enrolled(BaseModel):
    device_id: str
    device_class: str | None
    tags: list[str]
    token: str = pydantic.Field(description="The device's bearer token (HTTP); shown once.")
    mqtt_username: str = pydantic.Field(description="MQTT user name: the device id.")
    mqtt_password: str = pydantic.Field(description="MQTT password: the device token.")


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    actor: str = Field(max_length=80, index=True)
    role: str | None = Field(default=None, max_length=16)
    method: str = Field(max_length=8)
    path: str = Field(max_length=500)
    route: str | None = Field(default=None, max_length=200)
    status_code: int
    target: str | None = Field(default=None, max_length=200)
    detail: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    source: str | None = Field(
        default=None, max_length=64, description="Client address (an IPv6 one by its /64)."
    )
    calls: int = Field(
        default=1,
        description="Calls this row stands for: 1, or how many refusals of unidentified "
        "callers it aggregates (same source, route, status and window).",
    )
    last_ts: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="Last call an aggregated row counts."
    )
    aggregate_key: str | None = Field(
        default=None,
        max_length=64,
        unique=True,
        index=True,
        description="sha256 of (window, source, actor, method, route, status) for aggregated "
        "rows; None for one call's row.",
    )


class AuditPublic(BaseModel):
    id: int
    ts: datetime
    actor: str
    role: str | None
    method: str
    path: str
    route: str | None
    status_code: int
    target: str | None
    detail: dict[str, Any] | None
    source: str | None = pydantic.Field(default=None, description="Client address.")
    calls: int = pydantic.Field(
        default=1, description="1, or how many unidentified refusals this row aggregates."
    )
    last_ts: datetime | None = pydantic.Field(
        default=None, description="The last call an aggregated row counts (ts is the first)."
    )

    @classmethod
    def of(cls, row: AuditLog) -> AuditPublic:
        assert row.id is not None
        return cls.model_validate(row.model_dump())
