"""Server settings: environment variables prefixed ``EDGEFLEET_``, overridable by CLI flags."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
#: The contract's device id (one topic level), and what an MQTT user name may look like (no
#: ':' for Mosquitto's password file, no '+', '#' or '/' for its %u ACL patterns).
_DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_MQTT_USER = re.compile(r"[A-Za-z0-9._-]{1,64}")


class LocalStoreConfig(BaseModel):
    """Bundles in a local directory as ``<name>/<version>.tar.gz``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local"] = Field(default="local", description="Store type key.")
    root: Path | None = Field(
        default=None, description="Directory for bundles; default <data_dir>/artifacts."
    )


#: One member today; an S3-compatible store joins as a discriminated union on ``kind``.
StoreConfig = LocalStoreConfig


class ServerSettings(BaseSettings):
    """Everything the fleet server needs to start; no I/O happens when this is built."""

    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", extra="forbid")

    data_dir: Path = Field(
        default=Path("edgefleet-data"),
        description="Directory for the SQLite file, artifacts, temp uploads and the token file.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/edgefleet.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db.",
    )
    broker_url: str | None = Field(
        default=None,
        description="mqtt://[user:password@]host:port of an external broker (without "
        "user:password the server logs in as mqtt_username); None starts the embedded broker.",
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
    host: str = Field(default="127.0.0.1", description="HTTP listen address.")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP listen port.")
    public_url: str | None = Field(
        default=None,
        description="Base URL devices use to download bundles; default http://<host>:<port>.",
    )
    operator_token: SecretStr | None = Field(
        default=None,
        description="Operator bearer token; unset: generated once into <data_dir>/operator_token.",
    )
    max_bundle_bytes: int = Field(
        default=256 * MIB, ge=1, description="Largest bundle upload accepted, in bytes."
    )
    trusted_keys: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="PEM public keys that verify signed manifests (JSON list or comma-separated).",
    )
    require_signed: bool = Field(
        default=False, description="Refuse bundles whose manifest carries no trusted signature."
    )
    artifact_store: StoreConfig = Field(
        default_factory=LocalStoreConfig, description="Where bundles are stored."
    )
    ingest_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most messages written per DB transaction."
    )
    ingest_batch_interval_s: float = Field(
        default=0.2, gt=0, le=10, description="Longest a received message waits for its batch."
    )
    ingest_queue_size: int = Field(
        default=20_000, ge=1, description="Messages buffered between the MQTT thread and the DB."
    )
    mqtt_client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Client id of the server's MQTT connection; default "
        "edgefleet-server-<host>-<pid>, unique so two servers on one broker never evict "
        "each other.",
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
    replica_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="This server's name among replicas (lease holder, logs); default <host>-<pid>.",
    )
    lease_ttl_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How long the rollout-driver lease lasts without renewal; another replica "
        "takes over this long after the driver dies.",
    )
    lease_renew_s: float = Field(
        default=5.0, gt=0, le=1200, description="How often the lease is renewed or contended for."
    )
    telemetry_raw_days: float = Field(
        default=7.0,
        gt=0,
        description="Raw telemetry older than this (days) is rolled up into hourly rows and "
        "deleted by the retention job.",
    )
    telemetry_hourly_days: float = Field(
        default=90.0, gt=0, description="Hourly telemetry rows older than this (days) are deleted."
    )
    retention_interval_s: float = Field(
        default=3600.0, gt=0, description="How often the retention job runs (on the driver)."
    )
    ingest_workers: int = Field(
        default=0,
        ge=0,
        le=32,
        description="Worker processes that ingest telemetry and events (each its own MQTT v5 "
        "connection in the shared group and its own database writer); 0 ingests in the server "
        "process. Needs broker_url (shared subscriptions). A worker writes whatever has arrived "
        "(up to ingest_batch_size) per transaction; ingest_batch_interval_s and "
        "ingest_queue_size apply to in-process ingest only.",
    )
    ingest_shared_group: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="MQTT v5 shared-subscription group: replicas with the same group split "
        "device telemetry and events between them ($share/<group>/...). Needs an external broker "
        "with shared subscriptions (Mosquitto >= 1.6); the embedded broker has none.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the server process."
    )

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if self.require_signed and not self.trusted_keys:
            raise ValueError("require_signed needs at least one trusted key")
        if self.operator_token is not None and len(self.operator_token.get_secret_value()) < 16:
            raise ValueError("operator_token must be at least 16 characters")
        if _DEVICE_ID.fullmatch(self.mqtt_username):
            raise ValueError(
                "mqtt_username must not be a valid device id (add a '.' or an upper-case letter)"
            )
        if not _MQTT_USER.fullmatch(self.mqtt_username):
            raise ValueError("mqtt_username may use only letters, digits and . _ -")
        if self.mqtt_password is not None and len(self.mqtt_password.get_secret_value()) < 16:
            raise ValueError("mqtt_password must be at least 16 characters")
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError("lease_renew_s must be at most half of lease_ttl_s")
        for name, value in (
            ("ingest_shared_group", self.ingest_shared_group),
            ("ingest_workers", self.ingest_workers or None),
        ):
            if value is not None and self.broker_url is None:
                raise ValueError(
                    f"{name} needs broker_url: the embedded broker does not support MQTT v5 "
                    "shared subscriptions (use Mosquitto >= 1.6 or EMQX)"
                )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'edgefleet.db'}"

    @property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @property
    def resolved_mqtt_client_id(self) -> str:
        if self.mqtt_client_id:
            return self.mqtt_client_id
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]
        return f"edgefleet-server-{host}-{os.getpid()}"

    @property
    def resolved_replica_id(self) -> str:
        if self.replica_id:
            return self.replica_id
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
        return f"{host}-{os.getpid()}"

    @property
    def resolved_ingest_group(self) -> str | None:
        """The shared-subscription group ingest uses: the replicas' group, else (with workers
        only) one private to this server."""
        if self.ingest_shared_group:
            return self.ingest_shared_group
        if self.ingest_workers:
            return "edgefleet-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.resolved_replica_id)[:54]
        return None

    @property
    def artifact_root(self) -> Path:
        return self.artifact_store.root or self.data_dir / "artifacts"
