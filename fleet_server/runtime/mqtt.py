"""How the server reaches its MQTT broker, all chosen from the settings: the embedded broker
(when there is no ``broker_url``), the bus's protocol, session and TLS, the ingest workers'
connections, and who tells the broker about device logins. Errors are the parts' own
(BrokerError, CredentialsError); :class:`fleet_server.runtime.Runtime` turns them into a
StartupError."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine

from edgefleet.contract import Channel, DesiredState
from edgefleet.mqtt_tls import TlsFiles
from fleet_server.messaging.bus import FleetBus
from fleet_server.messaging.ingest import IngestWriter
from fleet_server.messaging.workers import WorkerConfig
from fleet_server.services.broker_credentials import BrokerCredentials
from fleet_server.services.broker_credentials.registry import (
    CredentialsContext,
    create_credentials,
    credentials_kind,
)
from fleet_server.services.mqtt_auth import DatabaseAuthenticator, MqttCredential
from fleet_server.settings import ServerSettings

if TYPE_CHECKING:
    from fleet_server.broker import EmbeddedBroker

log = logging.getLogger(__name__)


def start_embedded_broker(
    settings: ServerSettings, *, engine: Engine, server: MqttCredential
) -> EmbeddedBroker:
    """The embedded broker, started (BrokerError if it does not); it admits devices only once
    the bus has subscribed (:meth:`EmbeddedBroker.admit_devices`)."""
    from fleet_server.broker import EmbeddedBroker

    authenticator = None
    if settings.mqtt_auth:
        authenticator = DatabaseAuthenticator(engine=engine, server=server)
    else:
        log.warning("the embedded MQTT broker admits anonymous clients to every topic")
    broker = EmbeddedBroker(
        host=settings.embedded_broker_host,
        port=settings.embedded_broker_port,
        authenticator=authenticator,
        gate_devices=True,
        auth_throttle=settings.mqtt_auth_throttle,
    )
    broker.start(timeout=10.0)
    return broker


def make_bus(
    settings: ServerSettings,
    *,
    broker_url: str,
    credential: MqttCredential,
    writer: IngestWriter,
    desired_source: Callable[[], list[DesiredState]],
    channels: tuple[Channel, ...],
    admit_devices: Callable[[], None] | None,
) -> FleetBus:
    """The bus: an external broker keeps the server's session (settings); the embedded
    one lives and dies with this process, so a clean session, and it admits devices once
    the bus has subscribed (after every broker start): ``admit_devices`` tells it, None for an
    external broker."""
    tls = {
        name: str(path) if path is not None else None
        for name, path in (
            ("ca_file", settings.broker_ca_file),
            ("cert_file", settings.broker_cert_file),
            ("key_file", settings.broker_key_file),
        )
    }
    external = admit_devices is None
    expiry = settings.mqtt_session_expiry_s if external else 0
    # MQTT v5 to an external broker unless told otherwise (amqtt does not speak 5), kept
    # session or clean: on 3.1.1 Mosquitto sends a client 20 messages in flight and queues
    # 1,000 more, then drops (seen: a burst of 200 devices' telemetry while the server
    # process was busy); on 5 the window is our Receive Maximum (ingest_queue_size).
    v5 = external and settings.broker_mqtt_version == "5"
    return FleetBus(
        broker_url=broker_url,
        username=credential.username,
        password=credential.password,
        client_id=settings.resolved_mqtt_client_id,
        writer=writer,
        desired_source=desired_source,
        protocol=5 if v5 else 3,
        session_expiry_s=expiry if expiry > 0 else None,
        on_subscribed=admit_devices,
        shared_group=settings.resolved_ingest_group,
        channels=channels,
        receive_maximum=min(settings.ingest_queue_size, 65_535),
        # The embedded broker acknowledges a device's message once the bus has: only
        # after ingest stored it, so a SIGKILL of this process loses nothing acknowledged.
        acks_after_store=not external,
        **tls,
    )


def worker_configs(
    settings: ServerSettings, *, broker_url: str, credential: MqttCredential
) -> list[WorkerConfig]:
    """One connection per ingest worker, in the shared-subscription group."""
    group = settings.resolved_ingest_group
    assert group is not None
    return [
        WorkerConfig(
            name=f"worker-{i}",
            database_url=settings.resolved_database_url,
            broker_url=broker_url,
            username=credential.username,
            password=credential.password,
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


def broker_credentials(
    settings: ServerSettings,
    *,
    broker_url: str,
    credential: MqttCredential,
    embedded: EmbeddedBroker | None,
) -> BrokerCredentials:
    """The one place that picks how device logins reach the broker (CredentialsError if the
    configured way cannot start)."""
    kind = credentials_kind(dynsec=settings.broker_dynsec, external=settings.broker_url is not None)
    return create_credentials(
        kind,
        CredentialsContext(
            broker_url=broker_url,
            username=credential.username,
            password=credential.password,
            client_id=f"{settings.resolved_mqtt_client_id}-dynsec",
            timeout_s=settings.broker_dynsec_timeout_s,
            tls=TlsFiles(
                ca_file=_path(settings.broker_ca_file),
                cert_file=_path(settings.broker_cert_file),
                key_file=_path(settings.broker_key_file),
            ),
            embedded=embedded,
        ),
    )


def without_credentials(url: str) -> str:
    """``url`` without ``user:password@`` (safe for logs and the startup line)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None
