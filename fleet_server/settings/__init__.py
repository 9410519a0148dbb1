"""Server settings: environment variables prefixed ``EDGEFLEET_``, overridable by CLI flags."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fleet_server.messaging.sanity import DeviceClock
from fleet_server.messaging.statements import StatementsName
from fleet_server.services.drift.detectors import DriftConfig
from fleet_server.services.drift.retrain import RetrainConfig
from fleet_server.settings.mqtt import MqttSettings
from fleet_server.storage.config import LocalStoreConfig, StoreConfig

MIB = 1024 * 1024


class ServerSettings(BaseSettings, MqttSettings):
    """Everything the fleet server needs to start; no I/O happens when this is built. The MQTT
    fields and their rules are a section of their own (:class:`.mqtt.MqttSettings`)."""

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
    host: str = Field(default="127.0.0.1", description="HTTP listen address.")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP listen port.")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=2000,
        description="Comma-separated addresses or networks of reverse proxies whose "
        "X-Forwarded-For names the client (uvicorn's forwarded_allow_ips; '*' trusts every "
        "peer: only when nothing but the proxy can reach the server). The client address "
        "keys the wrong-credential budget and the audit log's source.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL devices use to download bundles; default http://<host>:<port>.",
    )
    operator_token: SecretStr | None = Field(
        default=None,
        description="Operator bearer token; unset: generated once into <data_dir>/operator_token.",
    )
    auth_failure_budget: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Wrong credentials (operator or device bearer tokens, enrollment tokens) one "
        "client address may present before it is refused with 429 and Retry-After; the budget "
        "refills over auth_failure_window_s. Counted per server process.",
    )
    auth_failure_window_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="The failure budget refills completely in this long: a refused address may "
        "try again after auth_failure_window_s / auth_failure_budget seconds (3 s by default).",
    )
    auth_throttle_max_clients: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Most client addresses the failure table holds (least recently failed "
        "dropped first; about 300 bytes each), so a flood from many addresses cannot grow it.",
    )
    auth_known_good_s: float = Field(
        default=86_400.0,
        gt=0,
        le=30 * 86_400,
        description="A credential accepted within this long is still checked when its client "
        "address is refused (a device behind the same NAT as a guesser keeps working).",
    )
    audit_retention_days: float = Field(
        default=365.0,
        gt=0,
        description="Audit log rows older than this (days) are deleted by the retention job.",
    )
    audit_aggregate_window_s: int = Field(
        default=3600,
        ge=1,
        le=86_400,
        description="Refused calls by an unidentified caller (no or a wrong token, a bad "
        "enrollment token) share one audit row per source address, route, status and this "
        "long a window, with a count; identified callers get one row per call.",
    )
    max_bundle_bytes: int = Field(
        default=256 * MIB, ge=1, description="Largest bundle upload accepted, in bytes."
    )
    max_sample_bytes: int = Field(
        default=8 * MIB,
        ge=1,
        description="Largest captured sample (one JPEG or .npy file) a device uploads, in bytes.",
    )
    sample_retention_days: float = Field(
        default=180.0,
        gt=0,
        description="Samples received longer ago than this (days) are deleted by the retention "
        "job, labelled or not; their content goes when no sample refers to it any more.",
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
    ingest_pg_statements: StatementsName = Field(
        default="arrays",
        description="How an ingest batch reaches PostgreSQL: 'arrays', one statement per table "
        "with a whole column per parameter; 'executemany', one statement per row (pipelined), "
        "the earlier writer. Both commit the batch in one transaction before acknowledging it. "
        "SQLite always uses executemany.",
    )
    device_ts_future_s: float = Field(
        default=86_400.0,
        ge=60,
        le=365 * 86_400,
        description="Device messages dated further ahead of the server's clock than this "
        '(seconds) are refused and counted (edgefleet_ingest_rejected{reason="ts_future"}): '
        "a device clock in the future cannot freeze its liveness or its data.",
    )
    device_ts_past_s: float = Field(
        default=7 * 86_400.0,
        ge=60,
        le=3650 * 86_400,
        description="Telemetry and events dated further back than this (seconds) are "
        "refused and counted (reason ts_past). Longer than a day by default: an agent's outbox "
        "keeps what it could not send while offline, and sends it later with its original "
        "time; raw telemetry this old would be rolled up by retention anyway "
        "(telemetry_raw_days). Not applied to status and state (retained: a server restart gets "
        "them again with their old time; a Last Will carries the connect time).",
    )
    device_seq_reset_window: int = Field(
        default=1_000_000,
        ge=1_000,
        description="A state or telemetry seq more than this below the last one applied for "
        "its device is a restarted counter (a reinstalled agent, or one that once sent a huge "
        "seq): applied and counted (edgefleet_ingest_seq_resets) instead of ignored for ever. "
        "Smaller gaps are redeliveries and stay ignored.",
    )
    rollout_tick_s: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="How often the rollout engine steps active rollouts (it also steps one at "
        "once after an operator action).",
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
    telemetry_rollup_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the telemetry roll-up job (5-minute sums the long charts read) "
        "runs on the driver; its rows are kept telemetry_hourly_days.",
    )
    malloc_arena_max: int = Field(
        default=2,
        ge=0,
        le=64,
        description="glibc malloc arenas at most (fleet_server.heap; 0: glibc's default of 8 "
        "per core). An explicit MALLOC_ARENA_MAX in the environment wins.",
    )
    heap_trim_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between malloc_trim calls that hand freed heap pages back to the "
        "system after an ingest burst (fleet_server.heap; 0: never).",
    )
    drift: DriftConfig = Field(
        default_factory=DriftConfig,
        description="Drift detection on the driver: windows, reference and detector thresholds "
        "(JSON in EDGEFLEET_DRIFT, e.g. '{\"window_s\": 1800}').",
    )
    retrain: RetrainConfig | None = Field(
        default=None,
        description='What a new drift alert triggers: {"type": "command", "argv": [...]} '
        'or {"type": "webhook", "url": ..., "secret": ...}; None: alerts only.',
    )
    retrain_cooldown_s: float = Field(
        default=86_400.0,
        ge=0,
        le=90 * 86_400,
        description="At most one retraining trigger per model name in this long.",
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
    def device_clock(self) -> DeviceClock:
        """The ingest checks of device timestamps and seqs (messaging/sanity.py)."""
        return DeviceClock(
            future_s=self.device_ts_future_s,
            past_s=self.device_ts_past_s,
            seq_reset_window=self.device_seq_reset_window,
        )

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
        # The '.' keeps it out of the device-id space (see mqtt_client_id).
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]
        return f"edgefleet.server.{host}.{self.port}"

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
        """The local store's directory (unused by other stores)."""
        store = self.artifact_store
        if isinstance(store, LocalStoreConfig) and store.root is not None:
            return store.root
        return self.data_dir / "artifacts"
