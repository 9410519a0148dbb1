"""The embedded broker's device gate: after every start, devices wait until the server has
subscribed (a fresh broker has no sessions: a device draining its offline queue into it first
would have its QoS 1 messages acknowledged and dropped)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from edgefleet.contract.topics import Channel, fleet_filter, topic
from edgefleet.mqtt import BrokerAddress, MqttTransport
from fleet_server.broker import EmbeddedBroker
from tests.fleet_server.broker.test_broker_auth import SERVER, DictAuthenticator

if TYPE_CHECKING:
    from tests.fleet_server.broker.conftest import ClientFactory, RefusalProbe

pytestmark = pytest.mark.integration


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_devices_wait_for_the_server_after_every_start(
    start_broker: Callable[..., EmbeddedBroker],
    connect: ClientFactory,
    refused: RefusalProbe,
) -> None:
    device = f"gate-{secrets.token_hex(3)}"
    broker = start_broker(authenticator=DictAuthenticator({device: "tok"}), gate_devices=True)
    assert not broker.devices_admitted
    reason = refused(broker.url, f"agent-{device}", credentials=(device, "tok"))
    assert "unavailable" in reason.lower()
    connect(broker.url, "server", credentials=SERVER)  # the server is never held back
    broker.admit_devices()
    connect(broker.url, f"agent-{device}", credentials=(device, "tok"))
    broker.stop()
    broker.start(timeout=10)
    assert not broker.devices_admitted  # closed again by the restart
    assert "unavailable" in refused(broker.url, "again", credentials=(device, "tok")).lower()


def test_an_ungated_broker_admits_devices_at_once(
    start_broker: Callable[..., EmbeddedBroker], connect: ClientFactory
) -> None:
    device = f"gate-{secrets.token_hex(3)}"
    broker = start_broker(authenticator=DictAuthenticator({device: "tok"}))
    assert broker.devices_admitted
    connect(broker.url, f"agent-{device}", credentials=(device, "tok"))


def test_server_subscribes_then_devices_get_in_and_are_heard(
    start_broker: Callable[..., EmbeddedBroker],
) -> None:
    """The order the runtime wires: the transport's on_subscribed opens the gate; a device
    refused meanwhile retries on its own and its first message reaches the server."""
    device = f"gate-{secrets.token_hex(3)}"
    broker = start_broker(authenticator=DictAuthenticator({device: "tok"}), gate_devices=True)
    address = BrokerAddress.from_url(broker.url)
    agent = MqttTransport(
        BrokerAddress(address.host, address.port, username=device, password="tok"),  # noqa: S106 - test-only
        client_id=f"agent-{device}",
    )
    agent.start(wait=None)  # refused (0x03) and retrying with back-off
    server = MqttTransport(
        BrokerAddress(address.host, address.port, username=SERVER[0], password=SERVER[1]),
        client_id="server",
        on_subscribed=broker.admit_devices,
    )
    got: list[bytes] = []
    server.subscribe(fleet_filter(Channel.TELEMETRY), lambda t, p, r: got.append(p))
    try:
        time.sleep(0.5)
        assert not agent.connected
        server.start(wait=10)
        assert _wait(lambda: broker.devices_admitted, 5)
        assert agent.wait_connected(15), "the refused device did not retry"
        agent.publish(topic(device, Channel.TELEMETRY), b"first")
        assert agent.wait_published(5)
        assert _wait(lambda: got == [b"first"], 5), got
    finally:
        agent.close()
        server.close()
