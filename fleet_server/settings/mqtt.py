"""The server's MQTT side of the settings: how it reaches a broker (an external one by URL with
TLS, or the embedded one), its own MQTT identity and session, and how device logins are checked
(embedded broker, Mosquitto dynamic security, HTTP auth for brokers that call out).

A section of :class:`fleet_server.settings.ServerSettings` by inheritance, not nesting: each
field is still ``EDGEFLEET_<NAME>`` (``EDGEFLEET_BROKER_URL``, ``EDGEFLEET_MQTT_USERNAME``, ...).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from edgefleet.contract.common import DEVICE_ID_PATTERN
from fleet_server.broker.config import AuthThrottleConfig

#: The contract's device id (one topic level), and what an MQTT user name may look like (no
#: ':' for Mosquitto's password file, no '+', '#' or '/' for its %u ACL patterns).
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_MQTT_USER = re.compile(r"[A-Za-z0-9._-]{1,64}")


class MqttSettings(BaseModel):
    """The MQTT fields of the server settings and the rules between them."""

    model_config = ConfigDict(extra="forbid")

    broker_url: str | None = Field(
        default=None,
        description="mqtt://[user:password@]host:port of an external broker (without "
        "user:password the server logs in as mqtt_username); None starts the embedded broker.",
    )
    broker_ca_file: Path | None = Field(
        default=None,
        description="CA bundle that signed an mqtts:// broker's certificate (default: the "
        "system's trust store). The certificate and host name are always verified.",
    )
    broker_cert_file: Path | None = Field(
        default=None,
        description="Client certificate (PEM) for an mqtts:// broker that requires one; "
        "needs broker_key_file.",
    )
    broker_key_file: Path | None = Field(
        default=None, description="Private key (PEM) of broker_cert_file."
    )
    broker_mqtt_version: Literal["3.1.1", "5"] = Field(
        default="5",
        description="MQTT version spoken to an external broker (the embedded broker uses "
        "3.1.1). With 5 a kept session expires after mqtt_session_expiry_s, and the broker may "
        "send up to ingest_queue_size unacknowledged messages (Receive Maximum); with 3.1.1 "
        "(brokers without MQTT 5, e.g. amqtt) the broker's own policy decides both (Mosquitto: "
        "persistent_client_expiration; 20 in flight and max_queued_messages 1,000 queued, then "
        "it drops messages for a busy server).",
    )
    mqtt_session_expiry_s: int = Field(
        default=86_400,
        ge=0,
        le=0xFFFFFFFF,
        description="How long an external broker keeps the server's session (its "
        "subscriptions and the device messages queued for it) while the server is away or "
        "the broker restarts (with broker persistence). 0: a clean session on every connect "
        "(device messages sent while the server is not subscribed are lost).",
    )
    broker_connect_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="How long startup waits for the broker."
    )
    embedded_broker_host: str = Field(
        default="127.0.0.1", description="Interface the embedded broker listens on."
    )
    embedded_broker_port: int = Field(
        default=1884, ge=0, le=65535, description="Port of the embedded broker."
    )
    mqtt_auth_throttle: AuthThrottleConfig = Field(
        default_factory=AuthThrottleConfig,
        description="How the embedded broker locks a user name or source address after "
        'repeated failed logins (JSON, e.g. {"max_lockout_s": 10}).',
    )
    mqtt_client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=60,
        description="Client id of the server's MQTT connection, and so of its broker session "
        "(ingest workers add -w<i>); default edgefleet.server.<host>.<port>: stable across "
        "restarts (the broker hands the restarted server what was queued for it) and unique per "
        "host and HTTP port, so two servers on one broker never evict each other. Letters, "
        "digits and . _ -, never a valid device id (a device's client id is its device id, so "
        "a device with the server's would take over its session): include a '.' or an "
        "upper-case letter. Set it where host names change (containers).",
    )
    broker_dynsec: bool = Field(
        default=False,
        description="Manage device logins on an external Mosquitto through its dynamic-security "
        "plugin (enrolment, rotation and removal apply at once, no files, no reload); the "
        "server is the plugin's admin as mqtt_username/mqtt_password. `edgefleet server acl "
        "--dynsec` prints the broker's config. Needs broker_url.",
    )
    broker_dynsec_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="How long a dynamic-security command may take."
    )
    broker_http_auth: bool = Field(
        default=False,
        description="Answer brokers that call out to authenticate and authorise MQTT clients "
        "(EMQX HTTP authn/authz, mosquitto-go-auth's HTTP backend) under /broker/v1/; the "
        "same rule as the embedded broker. Off: those routes answer 404.",
    )
    broker_http_auth_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="Addresses (CIDR, comma-separated) the broker calls from; any other caller "
        "is refused (403): these routes see plaintext device passwords.",
    )
    mqtt_auth: bool = Field(
        default=True,
        description="The embedded broker admits only the server and registered devices "
        "(user name = device id, password = device token) and confines each device to its "
        "own topics; false admits anonymous clients to every topic (closed lab networks only).",
    )
    mqtt_username: str = Field(
        default="edgefleet.server",
        min_length=1,
        max_length=64,
        description="The server's MQTT user name; never a valid device id (it must contain a "
        "character device ids cannot, e.g. '.'), so no device can be registered under it.",
    )
    mqtt_password: SecretStr | None = Field(
        default=None,
        description="The server's MQTT password; unset: generated once into "
        "<data_dir>/mqtt_password. Ignored when broker_url carries user:password.",
    )

    @field_validator("broker_http_auth_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("broker_http_auth_sources")
    @classmethod
    def _check_sources(cls, value: list[str]) -> list[str]:
        for source in value:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError as err:
                raise ValueError(f"not an address or network: {source[:80]!r}") from err
        return value

    @model_validator(mode="after")
    def _check_mqtt(self) -> MqttSettings:
        if _DEVICE_ID.fullmatch(self.mqtt_username):
            raise ValueError(
                "mqtt_username must not be a valid device id (add a '.' or an upper-case letter)"
            )
        if not _MQTT_USER.fullmatch(self.mqtt_username):
            raise ValueError("mqtt_username may use only letters, digits and . _ -")
        if self.mqtt_client_id is not None:
            if not _MQTT_USER.fullmatch(self.mqtt_client_id):
                raise ValueError("mqtt_client_id may use only letters, digits and . _ -")
            if _DEVICE_ID.fullmatch(self.mqtt_client_id):
                raise ValueError(
                    "mqtt_client_id must not be a valid device id (add a '.' or an upper-case "
                    "letter): a device registered under it would take over the server's session"
                )
        if self.broker_dynsec and not self.broker_url:
            raise ValueError("broker_dynsec needs an external Mosquitto (broker_url)")
        if self.mqtt_password is not None and len(self.mqtt_password.get_secret_value()) < 16:
            raise ValueError("mqtt_password must be at least 16 characters")
        tls_files = (self.broker_ca_file, self.broker_cert_file, self.broker_key_file)
        if any(tls_files) and not (self.broker_url or "").startswith("mqtts://"):
            raise ValueError("broker_ca_file/cert_file/key_file need an mqtts:// broker_url")
        if (self.broker_cert_file is None) != (self.broker_key_file is None):
            raise ValueError("broker_cert_file and broker_key_file go together")
        return self
