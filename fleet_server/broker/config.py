"""Typed configuration for each broker backend, discriminated on ``kind``."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefleet.contract import MAX_PAYLOAD_BYTES

#: Room for the topic, the packet id and the fixed header on top of the largest payload.
PACKET_OVERHEAD = 4 * 1024


class AuthThrottleConfig(BaseModel):
    """How the embedded broker slows down password guessing (:mod:`.throttle`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    free_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Failed logins per user name, and per source address, before it is locked.",
    )
    lockout_s: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="First lock after free_failures; each further failure doubles it.",
    )
    max_lockout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest lock: a correct password always works this long after the last "
        "failure.",
    )
    max_tracked: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="User names and addresses remembered at most (least recently used go first).",
    )

    @model_validator(mode="after")
    def _check_lockouts(self) -> AuthThrottleConfig:
        if self.lockout_s > self.max_lockout_s:
            raise ValueError("lockout_s must not exceed max_lockout_s")
        return self


class EmbeddedBrokerConfig(BaseModel):
    """The amqtt broker the server runs in its own thread: the one-machine default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["embedded"] = Field(default="embedded", description="Selects this backend.")
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=255,
        description="Interface to listen on; 0.0.0.0 exposes the broker to the network.",
    )
    port: int = Field(
        default=1884, ge=0, le=65535, description="TCP port; 0 picks a free one at start."
    )
    max_connections: int = Field(
        default=1000, ge=1, le=100_000, description="Connections beyond this are closed at once."
    )
    max_packet_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES + PACKET_OVERHEAD,
        ge=1024,
        le=256 * 1024 * 1024,
        description="A packet announcing more than this closes its connection before it is read.",
    )
    connect_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a new connection may take to send its CONNECT packet.",
    )
    auth_throttle: AuthThrottleConfig = Field(
        default_factory=AuthThrottleConfig,
        description="Locks on repeated failed logins (with an authenticator only).",
    )


class ExternalBrokerConfig(BaseModel):
    """A broker someone else runs (Mosquitto, EMQX): the server only needs its URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["external"] = Field(default="external", description="Selects this backend.")
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="mqtt://[user[:password]@]host[:port] or mqtts://... of the broker.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        try:
            _ = parts.port
        except ValueError as err:
            raise ValueError("has an invalid port") from err
        return value


BrokerConfig = Annotated[
    EmbeddedBrokerConfig | ExternalBrokerConfig,
    Field(discriminator="kind", description="Which broker backend the server uses."),
]
