"""Everything the running server owns, started and stopped in order by the app lifespan:
database (migrated) → embedded broker (if no broker URL) → ingest writer → MQTT bus → leader
loop (periodic jobs while this replica holds the ``driver`` lease).

How each part is built from the settings lives beside this: :mod:`.mqtt` (the broker, the bus,
ingest workers, broker credentials), :mod:`.jobs` (the driver's periodic jobs). This module
orders them, owns them, and turns their errors into a StartupError."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlmodel import Session

from edgefleet.contract import Channel, DesiredState
from edgefleet.mqtt import MqttError
from edgefleet.signing import SignatureError, load_public_key
from fleet_server.broker.throttle import AuthThrottleCollector
from fleet_server.db import DatabaseError, make_engine, migrate, safe_url
from fleet_server.heap import HeapTrimmer
from fleet_server.messaging.bus import INGEST_CHANNELS, FleetBus
from fleet_server.messaging.ingest import IngestWriter
from fleet_server.messaging.stats import IngestStats, make_registry
from fleet_server.messaging.workers import WORKER_CHANNELS, IngestWorkers
from fleet_server.runtime.jobs import add_driver_jobs
from fleet_server.runtime.mqtt import (
    broker_credentials,
    make_bus,
    start_embedded_broker,
    without_credentials,
    worker_configs,
)
from fleet_server.services.auth import resolve_operator_token
from fleet_server.services.broker_credentials import (
    BrokerCredentials,
    CredentialsError,
    StaticFileCredentials,
)
from fleet_server.services.desired import current_desired_states
from fleet_server.services.device_lifecycle import sync_broker
from fleet_server.services.fleet_metrics import FleetCollector
from fleet_server.services.leader import LeaderCollector, LeaderLoop
from fleet_server.services.mqtt_auth import (
    MqttCredential,
    resolve_server_credential,
)
from fleet_server.services.pipelines.driver import PipelineDriver
from fleet_server.services.rollouts.engine import RolloutEngine
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
        assert self.store is not None  # created above, before the jobs
        self.pipelines = add_driver_jobs(
            self.leader,
            settings=settings,
            engine=self.engine,
            store=self.store,
            rollouts=self.rollouts,
            trusted_keys=self.trusted_keys,
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
        assert self.mqtt_credential is not None
        try:
            self.credentials = broker_credentials(
                self.settings,
                broker_url=self.broker_url,
                credential=self.mqtt_credential,
                embedded=self.broker,
            )
        except CredentialsError as err:
            raise StartupError(str(err)) from err
        assert self.engine is not None
        try:
            sync_broker(engine=self.engine, credentials=self.credentials)
        except CredentialsError as err:  # the broker still works; only the clean-up failed
            log.warning("broker credentials not synchronised", extra={"error": str(err)})

    def _make_bus(self, broker_url: str, channels: tuple[Channel, ...]) -> FleetBus:
        assert self.writer is not None and self.mqtt_credential is not None
        return make_bus(
            self.settings,
            broker_url=broker_url,
            credential=self.mqtt_credential,
            writer=self.writer,
            desired_source=self._desired_states,
            channels=channels,
            admit_devices=None if self.broker is None else self._admit_devices,
        )

    def _admit_devices(self) -> None:
        if self.broker is not None:
            self.broker.admit_devices()

    def _start_workers(self, broker_url: str) -> None:
        settings = self.settings
        assert self.mqtt_credential is not None
        configs = worker_configs(settings, broker_url=broker_url, credential=self.mqtt_credential)
        self.workers = IngestWorkers(configs, self.stats)
        self.workers.start()
        if not self.workers.wait_reporting(timeout=settings.broker_connect_timeout_s + 30):
            raise StartupError("ingest workers did not start (see their log lines)")

    def _start_embedded_broker(self) -> str:
        from fleet_server.broker import BrokerError

        assert self.engine is not None and self.mqtt_credential is not None
        try:
            broker = start_embedded_broker(
                self.settings, engine=self.engine, server=self.mqtt_credential
            )
        except BrokerError as err:
            raise StartupError(f"embedded broker did not start: {err}") from err
        self.broker = broker
        if self.settings.mqtt_auth:
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
