"""Everything the running server owns, started and stopped in order by the app lifespan:
database (migrated) → embedded broker (if no broker URL) → ingest writer → MQTT bus → leader
loop (periodic jobs while this replica holds the ``driver`` lease)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine, text
from sqlmodel import Session

from edgefleet.contract import Channel, DesiredState
from edgefleet.mqtt import MqttError
from fleet_server.db import make_engine, migrate, safe_url
from fleet_server.messaging.bus import INGEST_CHANNELS, FleetBus
from fleet_server.messaging.ingest import IngestWriter
from fleet_server.messaging.stats import IngestStats, make_registry
from fleet_server.messaging.workers import WORKER_CHANNELS, IngestWorkers, WorkerConfig
from fleet_server.services.assignments import current_desired_states
from fleet_server.services.auth import resolve_operator_token
from fleet_server.services.leader import LeaderCollector, LeaderLoop
from fleet_server.services.mqtt_auth import (
    DatabaseAuthenticator,
    MqttCredential,
    resolve_server_credential,
)
from fleet_server.services.retention import RetentionJob
from fleet_server.settings import ServerSettings
from fleet_server.storage import ArtifactStore, create_store

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from fleet_server.broker import EmbeddedBroker

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The server cannot start with these settings; the message says why."""


class Runtime:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.stats = IngestStats()
        self.metrics: CollectorRegistry = make_registry(self.stats)
        #: Register periodic jobs here (before or after start): they run on one replica at a time.
        self.leader = LeaderLoop(
            holder=settings.resolved_replica_id,
            ttl_s=settings.lease_ttl_s,
            renew_s=settings.lease_renew_s,
        )
        self.metrics.register(LeaderCollector(self.leader.stats))
        self.engine: Engine | None = None
        self.store: ArtifactStore | None = None
        self.broker: EmbeddedBroker | None = None
        self.writer: IngestWriter | None = None
        self.bus: FleetBus | None = None
        self.workers: IngestWorkers | None = None
        self.operator_token = ""
        self.trusted_keys: list[bytes] = []
        #: The broker's URL without credentials (the bus connects with the server's own).
        self.broker_url = ""
        self.mqtt_credential: MqttCredential | None = None

    @property
    def tmp_dir(self) -> Path:
        return self.settings.data_dir / "tmp"

    def start(self) -> None:
        settings = self.settings
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(exist_ok=True)
            self.trusted_keys = [path.read_bytes() for path in settings.trusted_keys]
            self.operator_token = resolve_operator_token(settings=settings)
            self.mqtt_credential = resolve_server_credential(settings=settings)
        except (OSError, ValueError) as err:
            raise StartupError(str(err)) from err
        self.engine = make_engine(settings.resolved_database_url)
        migrate(self.engine)
        self.store = create_store(settings)
        broker_url = settings.broker_url or self._start_embedded_broker()
        self.broker_url = without_credentials(broker_url)
        self.writer = IngestWriter(
            engine=self.engine,
            stats=self.stats,
            batch_size=settings.ingest_batch_size,
            interval_s=settings.ingest_batch_interval_s,
            queue_size=settings.ingest_queue_size,
        )
        self.writer.start()
        channels: tuple[Channel, ...] = INGEST_CHANNELS
        if settings.ingest_workers:
            self._start_workers(broker_url)
            channels = tuple(c for c in INGEST_CHANNELS if c not in WORKER_CHANNELS)
        self.bus = FleetBus(
            broker_url=broker_url,
            username=self.mqtt_credential.username,
            password=self.mqtt_credential.password,
            client_id=settings.resolved_mqtt_client_id,
            writer=self.writer,
            desired_source=self._desired_states,
            shared_group=settings.resolved_ingest_group,
            channels=channels,
        )
        try:
            self.bus.start(wait=settings.broker_connect_timeout_s)
        except MqttError as err:
            raise StartupError(str(err)) from err
        self.leader.add_job(
            RetentionJob(
                engine=self.engine,
                raw_days=settings.telemetry_raw_days,
                hourly_days=settings.telemetry_hourly_days,
                interval_s=settings.retention_interval_s,
                budget_s=settings.lease_ttl_s / 3,
            )
        )
        self.leader.start(self.engine)
        log.info(
            "fleet server started",
            extra={
                "db": safe_url(settings.resolved_database_url),
                "broker": self.bus.broker,
                "replica": self.leader.holder,
            },
        )

    def _start_workers(self, broker_url: str) -> None:
        settings = self.settings
        assert self.mqtt_credential is not None
        group = settings.resolved_ingest_group
        assert group is not None
        configs = [
            WorkerConfig(
                name=f"worker-{i}",
                database_url=settings.resolved_database_url,
                broker_url=broker_url,
                username=self.mqtt_credential.username,
                password=self.mqtt_credential.password,
                client_id=f"{settings.resolved_mqtt_client_id}-w{i}",
                group=group,
                batch_size=settings.ingest_batch_size,
                connect_timeout_s=settings.broker_connect_timeout_s,
                log_level=settings.log_level,
            )
            for i in range(settings.ingest_workers)
        ]
        self.workers = IngestWorkers(configs, self.stats)
        self.workers.start()
        if not self.workers.wait_reporting(timeout=settings.broker_connect_timeout_s + 30):
            raise StartupError("ingest workers did not start (see their log lines)")

    def _start_embedded_broker(self) -> str:
        from fleet_server.broker import BrokerError, EmbeddedBroker

        assert self.engine is not None and self.mqtt_credential is not None
        authenticator = None
        if self.settings.mqtt_auth:
            authenticator = DatabaseAuthenticator(engine=self.engine, server=self.mqtt_credential)
        else:
            log.warning("the embedded MQTT broker admits anonymous clients to every topic")
        broker = EmbeddedBroker(
            host=self.settings.embedded_broker_host,
            port=self.settings.embedded_broker_port,
            authenticator=authenticator,
        )
        try:
            broker.start(timeout=10.0)
        except BrokerError as err:
            raise StartupError(f"embedded broker did not start: {err}") from err
        self.broker = broker
        return broker.url

    def _desired_states(self) -> list[DesiredState]:
        if self.engine is None:
            return []
        with Session(self.engine) as session:
            return list(
                current_desired_states(
                    session=session, public_url=self.settings.resolved_public_url
                )
            )

    def stop(self) -> None:
        """Stop in reverse order; each step runs even if an earlier one failed."""
        _quietly("leader loop", self.leader.stop)
        if self.bus is not None:
            _quietly("mqtt bus", self.bus.close)
            self.bus = None
        if self.workers is not None:
            _quietly("ingest workers", self.workers.stop)
            self.workers = None
        if self.writer is not None:
            _quietly("ingest writer", self.writer.stop)
            self.writer = None
        if self.broker is not None:
            _quietly("embedded broker", self.broker.stop)
            self.broker = None
        if self.engine is not None:
            _quietly("database", self.engine.dispose)
            self.engine = None
        log.info("fleet server stopped")

    def ready(self) -> dict[str, bool]:
        db_ok = False
        if self.engine is not None:
            try:
                with self.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                db_ok = True
            except Exception:  # noqa: BLE001 - any failure means not ready
                db_ok = False
        checks = {"database": db_ok, "broker": self.bus is not None and self.bus.connected}
        if self.settings.ingest_workers:
            checks["ingest_workers"] = self.workers is not None and self.workers.alive
        return checks


def without_credentials(url: str) -> str:
    """``url`` without ``user:password@`` (safe for logs and the startup line)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _quietly(what: str, step: Callable[[], object]) -> None:
    try:
        step()
    except Exception:  # noqa: BLE001 - shutdown continues with the next step
        log.exception("stopping failed", extra={"component": what})
