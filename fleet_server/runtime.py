"""Everything the running server owns, started and stopped in order by the app lifespan:
database (migrated) → embedded broker (if no broker URL) → ingest writer → MQTT bus → leader
loop (periodic jobs while this replica holds the ``driver`` lease)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine, text
from sqlmodel import Session

from edgefleet.contract import Channel, DesiredState
from edgefleet.mqtt import MqttError
from edgefleet.mqtt_tls import TlsFiles
from edgefleet.signing import SignatureError, load_public_key
from fleet_server.broker.throttle import AuthThrottleCollector
from fleet_server.db import DatabaseError, make_engine, migrate, safe_url
from fleet_server.heap import HeapTrimmer
from fleet_server.messaging.bus import INGEST_CHANNELS, FleetBus
from fleet_server.messaging.ingest import IngestWriter
from fleet_server.messaging.stats import IngestStats, make_registry
from fleet_server.messaging.workers import WORKER_CHANNELS, IngestWorkers, WorkerConfig
from fleet_server.services.auth import resolve_operator_token
from fleet_server.services.broker_credentials import (
    BrokerCredentials,
    CredentialsError,
    StaticFileCredentials,
)
from fleet_server.services.broker_credentials.registry import (
    CredentialsContext,
    create_credentials,
    credentials_kind,
)
from fleet_server.services.desired import current_desired_states
from fleet_server.services.device_lifecycle import sync_broker
from fleet_server.services.drift import DriftJob, backend_for
from fleet_server.services.drift.retrain import WebhookRetrainConfig
from fleet_server.services.fleet_metrics import FleetCollector
from fleet_server.services.leader import LeaderCollector, LeaderLoop
from fleet_server.services.mqtt_auth import (
    DatabaseAuthenticator,
    MqttCredential,
    resolve_server_credential,
)
from fleet_server.services.pipelines.config import PipelineRetrainConfig
from fleet_server.services.pipelines.driver import PipelineDriver
from fleet_server.services.pipelines.webhook_watch import WebhookRunWatch
from fleet_server.services.retention import RetentionJob
from fleet_server.services.rollouts.engine import RolloutEngine
from fleet_server.services.rollouts.job import RolloutJob
from fleet_server.services.rollup import RollupJob
from fleet_server.services.samples import SampleStats
from fleet_server.services.throttle import AuthThrottle, ThrottleCollector
from fleet_server.settings import ServerSettings
from fleet_server.storage import ArtifactStore, StoreError, create_store

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
        #: Wrong-credential budgets per client address (this process only; services/throttle/).
        self.throttle = AuthThrottle(
            budget=settings.auth_failure_budget,
            window_s=settings.auth_failure_window_s,
            max_clients=settings.auth_throttle_max_clients,
            known_good_s=settings.auth_known_good_s,
            max_known=settings.auth_throttle_max_clients,
        )
        self.metrics.register(ThrottleCollector(self.throttle))
        #: Sample uploads stored and refused (by reason), for /metrics.
        self.samples = SampleStats()
        self.metrics.register(self.samples)
        self.engine: Engine | None = None
        self.store: ArtifactStore | None = None
        self.broker: EmbeddedBroker | None = None
        self.writer: IngestWriter | None = None
        self.bus: FleetBus | None = None
        self.rollouts: RolloutEngine | None = None
        self.pipelines: PipelineDriver | None = None
        self.workers: IngestWorkers | None = None
        self.heap_trimmer: HeapTrimmer | None = None
        self.operator_token = ""
        self.trusted_keys: list[bytes] = []
        #: The broker's URL without credentials (the bus connects with the server's own).
        self.broker_url = ""
        self.mqtt_credential: MqttCredential | None = None
        #: Who may log in as a device: told of every enrolment, rotation and removal.
        self.credentials: BrokerCredentials = StaticFileCredentials()

    @property
    def tmp_dir(self) -> Path:
        return self.settings.data_dir / "tmp"

    def start(self) -> None:
        settings = self.settings
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(exist_ok=True)
            self.trusted_keys = _trusted_keys(settings.trusted_keys)
            self.operator_token = resolve_operator_token(settings=settings)
            self.mqtt_credential = resolve_server_credential(settings=settings)
        except (OSError, ValueError, SignatureError) as err:
            raise StartupError(str(err)) from err
        if not self.trusted_keys:
            log.warning(
                "no trusted keys (EDGEFLEET_TRUSTED_KEYS): uploaded signatures are recorded as "
                "unverified and rollouts are refused until a key that verifies them is trusted"
            )
        try:
            self.engine = make_engine(settings.resolved_database_url)
            migrate(self.engine)
        except DatabaseError as err:
            raise StartupError(str(err)) from err
        self.metrics.register(FleetCollector(self.engine))
        try:
            self.store = create_store(settings)
        except StoreError as err:
            raise StartupError(f"artifact store: {err}") from err
        broker_url = settings.broker_url or self._start_embedded_broker()
        self.broker_url = without_credentials(broker_url)
        self.writer = IngestWriter(
            engine=self.engine,
            stats=self.stats,
            batch_size=settings.ingest_batch_size,
            interval_s=settings.ingest_batch_interval_s,
            queue_size=settings.ingest_queue_size,
            clock=settings.device_clock,
            statements=settings.ingest_pg_statements,
        )
        self.writer.start()
        channels: tuple[Channel, ...] = INGEST_CHANNELS
        if settings.ingest_workers:
            self._start_workers(broker_url)
            channels = tuple(c for c in INGEST_CHANNELS if c not in WORKER_CHANNELS)
        try:
            self.bus = self._make_bus(broker_url, channels)
            self.bus.start(wait=settings.broker_connect_timeout_s)
        except MqttError as err:
            hint = ""
            if "no connection" in str(err) and self.bus is not None and self.bus.protocol == 5:
                hint = " (a broker that does not speak MQTT 5: set broker_mqtt_version=3.1.1)"
            raise StartupError(f"{err}{hint}") from err
        self._start_credentials()
        if self.broker is not None and not _wait_for(
            lambda: self.broker is not None and self.broker.devices_admitted,
            settings.broker_connect_timeout_s,
        ):
            raise StartupError("the embedded broker did not acknowledge the server's subscriptions")
        self.rollouts = RolloutEngine(
            engine=self.engine, publisher=self.bus, public_url=settings.resolved_public_url
        )
        self.leader.add_job(RolloutJob(self.rollouts, interval_s=settings.rollout_tick_s))
        self.leader.add_job(
            RetentionJob(
                engine=self.engine,
                raw_days=settings.telemetry_raw_days,
                hourly_days=settings.telemetry_hourly_days,
                audit_days=settings.audit_retention_days,
                sample_days=settings.sample_retention_days,
                store=self.store,
                interval_s=settings.retention_interval_s,
                budget_s=settings.lease_ttl_s / 3,
            )
        )
        self.leader.add_job(
            RollupJob(
                engine=self.engine,
                interval_s=settings.telemetry_rollup_interval_s,
                keep_days=settings.telemetry_hourly_days,
                budget_s=settings.lease_ttl_s / 3,
            )
        )
        if settings.drift.enabled:
            retrain = settings.retrain
            self.leader.add_job(
                DriftJob(
                    engine=self.engine,
                    config=settings.drift,
                    retrain=backend_for(retrain, engine=self.engine) if retrain else None,
                    cooldown_s=settings.retrain_cooldown_s,
                )
            )
        if isinstance(settings.retrain, PipelineRetrainConfig):
            leader = self.leader
            assert self.store is not None  # created above, before the jobs
            self.pipelines = PipelineDriver(
                engine=self.engine,
                config=settings.retrain,
                store=self.store,
                rollouts=self.rollouts,
                trusted_keys=self.trusted_keys,
                require_signed=settings.require_signed,
                work_dir=settings.retrain.work_dir or settings.data_dir / "pipelines",
                holds_lease=lambda epoch: leader.epoch == epoch,
                background=True,
            )
            self.leader.add_job(self.pipelines)
        if isinstance(settings.retrain, WebhookRetrainConfig):
            hook = settings.retrain
            self.leader.add_job(
                WebhookRunWatch(
                    engine=self.engine,
                    timeout_for=hook.report_timeout_for,
                    shortest_s=min([hook.report_timeout_s, *hook.report_timeouts_s.values()]),
                )
            )
        self.leader.start(self.engine)
        self.heap_trimmer = HeapTrimmer(settings.heap_trim_interval_s)
        self.heap_trimmer.start()
        log.info(
            "fleet server started",
            extra={
                "db": safe_url(settings.resolved_database_url),
                "broker": self.bus.broker,
                "replica": self.leader.holder,
            },
        )

    def _start_credentials(self) -> None:
        """The one place that picks how device logins reach the broker (settings)."""
        settings = self.settings
        assert self.mqtt_credential is not None
        try:
            kind = credentials_kind(
                dynsec=settings.broker_dynsec, external=settings.broker_url is not None
            )
            self.credentials = create_credentials(
                kind,
                CredentialsContext(
                    broker_url=self.broker_url,
                    username=self.mqtt_credential.username,
                    password=self.mqtt_credential.password,
                    client_id=f"{settings.resolved_mqtt_client_id}-dynsec",
                    timeout_s=settings.broker_dynsec_timeout_s,
                    tls=TlsFiles(
                        ca_file=_path(settings.broker_ca_file),
                        cert_file=_path(settings.broker_cert_file),
                        key_file=_path(settings.broker_key_file),
                    ),
                    embedded=self.broker,
                ),
            )
        except CredentialsError as err:
            raise StartupError(str(err)) from err
        assert self.engine is not None
        try:
            sync_broker(engine=self.engine, credentials=self.credentials)
        except CredentialsError as err:  # the broker still works; only the clean-up failed
            log.warning("broker credentials not synchronised", extra={"error": str(err)})

    def _make_bus(self, broker_url: str, channels: tuple[Channel, ...]) -> FleetBus:
        """The bus: an external broker keeps the server's session (settings); the embedded
        one lives and dies with this process, so a clean session, and it admits devices once
        the bus has subscribed (after every broker start)."""
        settings = self.settings
        assert self.writer is not None and self.mqtt_credential is not None
        tls = {
            name: str(path) if path is not None else None
            for name, path in (
                ("ca_file", settings.broker_ca_file),
                ("cert_file", settings.broker_cert_file),
                ("key_file", settings.broker_key_file),
            )
        }
        external = self.broker is None
        expiry = settings.mqtt_session_expiry_s if external else 0
        # MQTT v5 to an external broker unless told otherwise (amqtt does not speak 5), kept
        # session or clean: on 3.1.1 Mosquitto sends a client 20 messages in flight and queues
        # 1,000 more, then drops (seen: a burst of 200 devices' telemetry while the server
        # process was busy); on 5 the window is our Receive Maximum (ingest_queue_size).
        v5 = external and settings.broker_mqtt_version == "5"
        return FleetBus(
            broker_url=broker_url,
            username=self.mqtt_credential.username,
            password=self.mqtt_credential.password,
            client_id=settings.resolved_mqtt_client_id,
            writer=self.writer,
            desired_source=self._desired_states,
            protocol=5 if v5 else 3,
            session_expiry_s=expiry if expiry > 0 else None,
            on_subscribed=None if external else self._admit_devices,
            shared_group=settings.resolved_ingest_group,
            channels=channels,
            receive_maximum=min(settings.ingest_queue_size, 65_535),
            # The embedded broker acknowledges a device's message once the bus has: only
            # after ingest stored it, so a SIGKILL of this process loses nothing acknowledged.
            acks_after_store=not external,
            **tls,
        )

    def _admit_devices(self) -> None:
        if self.broker is not None:
            self.broker.admit_devices()

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
                clock=settings.device_clock,
                statements=settings.ingest_pg_statements,
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
            gate_devices=True,
            auth_throttle=self.settings.mqtt_auth_throttle,
        )
        try:
            broker.start(timeout=10.0)
        except BrokerError as err:
            raise StartupError(f"embedded broker did not start: {err}") from err
        self.broker = broker
        if authenticator is not None:
            self.metrics.register(AuthThrottleCollector(broker.auth_throttle))
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
        if self.heap_trimmer is not None:
            _quietly("heap trimmer", self.heap_trimmer.stop)
            self.heap_trimmer = None
        _quietly("leader loop", self.leader.stop)
        _quietly("broker credentials", self.credentials.close)
        if self.pipelines is not None:
            _quietly("pipeline driver", self.pipelines.close)
            self.pipelines = None
        self.rollouts = None
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
        checks = {
            "database": db_ok,
            "broker": self.bus is not None and self.bus.connected,
            # False while ingest holds a batch for a database it cannot reach (acks held).
            "ingest": not self.stats.any_stalled,
        }
        if self.settings.ingest_workers:
            checks["ingest_workers"] = self.workers is not None and self.workers.alive
        return checks


def without_credentials(url: str) -> str:
    """``url`` without ``user:password@`` (safe for logs and the startup line)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _quietly(what: str, step: Callable[[], object]) -> None:
    try:
        step()
    except Exception:  # noqa: BLE001 - shutdown continues with the next step
        log.exception("stopping failed", extra={"component": what})


def _trusted_keys(paths: list[Path]) -> list[bytes]:
    """Read and parse every trusted key now: a bad one stops the start with its file name,
    instead of failing every signed upload later."""
    keys = []
    for path in paths:
        pem = path.read_bytes()
        try:
            load_public_key(pem)
        except SignatureError as err:
            raise SignatureError(f"trusted key {path}: {err}") from err
        keys.append(pem)
    return keys


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None
