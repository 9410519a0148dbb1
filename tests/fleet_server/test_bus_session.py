"""Which session the server's bus asks for: kept (MQTT v5 with an expiry) on an external
broker, clean on the embedded one, 3.1.1 where the broker does not speak 5; a clean session on
an external broker speaks 5 too, for its receive window."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_server.broker import EmbeddedBroker
from fleet_server.runtime import Runtime, StartupError
from tests.conftest import external_mqtt_url
from tests.fleet_server.helpers import make_settings, running_app
from tests.utils.net import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def amqtt_as_external() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(host="127.0.0.1", port=free_port())  # speaks 3.1.1 only
    broker.start(timeout=10)
    yield broker
    broker.stop()


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


def test_a_kept_session_speaks_v5_on_mosquitto(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, _sqlite(tmp_path), broker_url=external_mqtt_url(), mqtt_session_expiry_s=120
    )
    with running_app(settings) as (_client, runtime):
        assert runtime.bus is not None and runtime.bus.connected and runtime.bus.protocol == 5


def test_a_clean_session_on_mosquitto_still_speaks_v5_with_a_receive_window(
    tmp_path: Path,
) -> None:
    # On 3.1.1 Mosquitto gives a client 20 messages in flight and 1,000 queued, then drops
    # ("Outgoing messages are being dropped" for a test server busy with 200 simulated devices);
    # on 5 the window is the server's Receive Maximum.
    settings = make_settings(
        tmp_path, _sqlite(tmp_path), broker_url=external_mqtt_url(), mqtt_session_expiry_s=0
    )
    with running_app(settings) as (_client, runtime):
        assert runtime.bus is not None and runtime.bus.connected and runtime.bus.protocol == 5
        assert runtime.bus.receive_maximum == min(settings.ingest_queue_size, 65_535)
        assert not runtime.bus.acks_after_commit  # a clean session: acknowledged on receipt


def test_embedded_broker_means_a_clean_311_session(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, _sqlite(tmp_path), mqtt_session_expiry_s=120)
    with running_app(settings) as (_client, runtime):
        assert runtime.bus is not None and runtime.bus.protocol == 3
        assert runtime.broker is not None and runtime.broker.devices_admitted


def test_a_broker_without_v5_gets_a_hint_or_311(
    tmp_path: Path, amqtt_as_external: EmbeddedBroker
) -> None:
    settings = make_settings(
        tmp_path,
        _sqlite(tmp_path),
        broker_url=amqtt_as_external.url,
        mqtt_session_expiry_s=120,
        broker_connect_timeout_s=2,
    )
    runtime = Runtime(settings)
    try:
        with pytest.raises(StartupError, match="broker_mqtt_version=3.1.1"):
            runtime.start()
    finally:
        runtime.stop()
    settings = settings.model_copy(update={"broker_mqtt_version": "3.1.1"})
    with running_app(settings) as (_client, runtime):
        assert runtime.bus is not None and runtime.bus.connected and runtime.bus.protocol == 3
