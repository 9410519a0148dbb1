"""The server's bus over ``mqtts://``: a real Mosquitto TLS listener, a real server, a device
transport over TLS whose telemetry ends up in the database; with client certificates too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edgefleet.contract import Channel, Telemetry, encode, topic
from edgefleet.mqtt import BrokerAddress, MqttTransport
from fleet_server.client.api import FleetClient
from fleet_server.runtime import Runtime, StartupError
from fleet_server.settings import ServerSettings
from tests.fleet_server.helpers import make_settings
from tests.utils.mosquitto import PrivateMosquitto
from tests.utils.server import live_server
from tests.utils.tls import Pki, make_pki, mosquitto_tls

pytestmark = pytest.mark.integration


@pytest.fixture
def pki() -> Iterator[Pki]:
    made = make_pki()
    yield made
    made.cleanup()


def _mosquitto(tmp_path: Path, pki: Pki, *, mutual: bool) -> PrivateMosquitto:
    broker = PrivateMosquitto(tmp_path, extra=mosquitto_tls(pki, require_certificate=mutual))
    broker.start()
    return broker


def _telemetry_reaches_the_database(
    tmp_path: Path, pki: Pki, *, mutual: bool, **server_settings: Any
) -> None:
    broker = _mosquitto(tmp_path, pki, mutual=mutual)
    url = f"mqtts://127.0.0.1:{broker.port}"
    try:
        with live_server(tmp_path, broker_url=url, **server_settings) as server:
            client = FleetClient(server.url, server.token)
            device_id = f"tls-{time.time_ns() % 10**9}"
            client.add_device(device_id)
            files = {}
            if mutual:
                pair = pki.client(device_id)
                files = {"cert_file": str(pair.cert), "key_file": str(pair.key)}
            address = BrokerAddress.from_url(url, ca_file=str(pki.ca.cert), **files)
            device = MqttTransport(address, client_id=f"edgefleet-agent-{device_id}")
            device.start()
            try:
                payload = Telemetry(
                    device_id=device_id, seq=7, interval_s=1.0, model=None, inference_count=3
                )
                device.publish(topic(device_id, Channel.TELEMETRY), encode(payload))
                assert device.wait_published(5)
                deadline = time.monotonic() + 10
                while not (rows := client.device_telemetry(device_id)):
                    assert time.monotonic() < deadline, "telemetry over TLS never stored"
                    time.sleep(0.1)
                assert [(r["seq"], r["inference_count"]) for r in rows] == [(7, 3)]
            finally:
                device.close()
    finally:
        broker.cleanup()


def test_server_and_device_over_tls(tmp_path: Path, pki: Pki) -> None:
    _telemetry_reaches_the_database(tmp_path, pki, mutual=False, broker_ca_file=pki.ca.cert)


def test_server_and_device_with_client_certificates(tmp_path: Path, pki: Pki) -> None:
    server = pki.client("edgefleet.server")
    _telemetry_reaches_the_database(
        tmp_path,
        pki,
        mutual=True,
        broker_ca_file=pki.ca.cert,
        broker_cert_file=server.cert,
        broker_key_file=server.key,
        mqtt_session_expiry_s=300,  # a kept session: MQTT v5 over TLS
    )


def test_server_refuses_to_start_on_a_broker_it_cannot_verify(tmp_path: Path, pki: Pki) -> None:
    broker = _mosquitto(tmp_path, pki, mutual=True)
    runtime: Runtime | None = None
    try:
        url = f"mqtts://127.0.0.1:{broker.port}"
        database = f"sqlite:///{tmp_path / 'db.sqlite'}"
        for files, message in (
            ({"broker_ca_file": pki.other_ca.cert}, "certificate was not accepted"),
            ({"broker_ca_file": pki.ca.cert}, "client certificate"),
        ):
            settings = make_settings(
                tmp_path, database, broker_url=url, broker_connect_timeout_s=15, **files
            )
            runtime = Runtime(settings)
            started = time.monotonic()
            with pytest.raises(StartupError, match=message):
                runtime.start()
            assert time.monotonic() - started < 12  # the reason, not a timeout
            runtime.stop()
            runtime = None
    finally:
        if runtime is not None:
            runtime.stop()
        broker.cleanup()


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    with pytest.raises(ValidationError, match="need an mqtts:// broker_url"):
        ServerSettings(broker_url="mqtt://127.0.0.1:1883", broker_ca_file=pem)
    with pytest.raises(ValidationError, match="need an mqtts:// broker_url"):
        ServerSettings(broker_ca_file=pem)  # the embedded broker speaks plain MQTT
    with pytest.raises(ValidationError, match="go together"):
        ServerSettings(broker_url="mqtts://broker:8883", broker_cert_file=pem)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ServerSettings(broker_url="mqtts://broker:8883", broker_tls_insecure=True)  # type: ignore[call-arg]


def test_unreadable_tls_files_stop_startup(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_url="mqtts://127.0.0.1:1",
        broker_ca_file=tmp_path / "missing.pem",
    )
    runtime = Runtime(settings)
    try:
        with pytest.raises(StartupError, match="missing.pem: cannot read"):
            runtime.start()
    finally:
        runtime.stop()
