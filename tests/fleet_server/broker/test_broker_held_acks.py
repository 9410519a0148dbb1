"""The embedded broker acknowledges a device's QoS 1 message only once every subscriber it was
sent to has acknowledged it (fleet_server.broker._amqtt_held).

Real paho clients against a real embedded broker: a subscriber with manual acknowledgements
stands for the fleet server's bus (which acknowledges after ingest stored the batch). Before,
amqtt acknowledged on receipt: the publisher's PUBACK came while the subscriber still held the
message, and a message whose delivery failed was gone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.contract.topics import Channel, topic
from fleet_server.broker import EmbeddedBroker
from tests.fleet_server.broker.test_broker_auth import SERVER, DictAuthenticator

pytestmark = pytest.mark.integration

DEVICE = "held-dev-1"
TELEMETRY = topic(DEVICE, Channel.TELEMETRY)


class Peer:
    """A paho client with manual acknowledgements that records (mid, topic, payload, dup)."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        manual_ack: bool,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            manual_ack=manual_ack,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.received: list[tuple[int, str, bytes, bool]] = []
        self.connects = 0
        self.disconnects = 0
        self._ready = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self._ready.wait(5), f"{client_id} did not connect"

    def _on_connect(self, *_args: Any) -> None:
        self.connects += 1
        self._ready.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnects += 1

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        self.received.append((msg.mid, msg.topic, bytes(msg.payload), bool(msg.dup)))

    def subscribe(self, topic_filter: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic_filter, qos=1)
        assert done.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers(start_broker: Callable[..., EmbeddedBroker]) -> Iterator[Callable[..., Peer]]:
    broker = start_broker()
    made: list[Peer] = []

    def _peer(client_id: str, *, manual_ack: bool = False) -> Peer:
        peer = Peer(broker.port, client_id, manual_ack=manual_ack)
        made.append(peer)
        return peer

    yield _peer
    for peer in made:
        peer.close()


def _wait(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_publisher_is_acknowledged_only_after_the_subscriber(
    peers: Callable[..., Peer],
) -> None:
    server = peers("server", manual_ack=True)
    server.subscribe("edgefleet/v1/+/telemetry")
    server.subscribe("edgefleet/v1/+/desired")
    device = peers(DEVICE)

    info = device.client.publish(TELEMETRY, b'{"seq": 1}', qos=1)
    assert _wait(lambda: len(server.received) == 1), "the subscriber never got the message"
    time.sleep(0.5)
    assert not info.is_published(), "acknowledged while the subscriber still held it"

    server.client.ack(server.received[0][0], 1)  # "stored"
    assert _wait(info.is_published), "no PUBACK after the subscriber acknowledged"

    # The server's own traffic to a device (desired state) is not held: a subscriber that never
    # acknowledges cannot stall the publisher.
    desired = device.client.publish(topic(DEVICE, Channel.DESIRED), b"{}", qos=1)
    assert _wait(desired.is_published, 2), "a message on a server channel was held"


def test_a_message_whose_delivery_failed_is_sent_again(peers: Callable[..., Peer]) -> None:
    holder = peers("holder", manual_ack=True)  # receives, never acknowledges, then goes away
    holder.subscribe("edgefleet/v1/+/telemetry")
    keeper = peers("keeper")  # acknowledges at once
    keeper.subscribe("edgefleet/v1/+/telemetry")
    device = peers(DEVICE)

    info = device.client.publish(TELEMETRY, b'{"seq": 7}', qos=1)
    assert _wait(lambda: len(holder.received) == 1 and len(keeper.received) == 1)
    time.sleep(0.3)
    assert not info.is_published()
    holder.close()  # before acknowledging: this delivery failed

    # The broker closes the publisher's connection without a PUBACK; paho sends the message
    # again after reconnecting, and this time every subscriber acknowledges it.
    assert _wait(info.is_published, 10), "the message was neither acknowledged nor sent again"
    assert device.disconnects >= 1
    assert device.connects >= 2
    assert [(t, p) for _m, t, p, _d in keeper.received] == [(TELEMETRY, b'{"seq": 7}')] * 2


def test_on_the_servers_broker_a_message_nobody_received_is_not_acknowledged(
    start_broker: Callable[..., EmbeddedBroker],
) -> None:
    # The fleet server's broker (credentials, device gate): only the server subscribes to device
    # channels, so while its connection is re-established a device's message reached nobody.
    broker = start_broker(authenticator=DictAuthenticator({DEVICE: "tok"}), gate_devices=True)
    made: list[Peer] = []

    def peer(client_id: str, credentials: tuple[str, str], *, manual_ack: bool) -> Peer:
        made.append(Peer(broker.port, client_id, manual_ack=manual_ack, credentials=credentials))
        return made[-1]

    try:
        server = peer("server", SERVER, manual_ack=False)
        server.subscribe("edgefleet/v1/+/telemetry")
        broker.admit_devices()
        device = peer(DEVICE, (DEVICE, "tok"), manual_ack=False)
        first = device.client.publish(TELEMETRY, b'{"seq": 1}', qos=1)
        assert _wait(first.is_published), "not acknowledged with the server subscribed"

        server.close()  # the server's connection drops (clean session: its subscriptions go)
        second = device.client.publish(TELEMETRY, b'{"seq": 2}', qos=1)
        assert _wait(lambda: device.disconnects >= 1), "the device was not sent away"
        assert not second.is_published(), "acknowledged with nobody to store it"

        again = peer("server", SERVER, manual_ack=False)
        again.subscribe("edgefleet/v1/+/telemetry")
        assert _wait(second.is_published, 10), "not sent again once the server was back"
        assert (TELEMETRY, b'{"seq": 2}') in [(t, p) for _m, t, p, _d in again.received]
    finally:
        for made_peer in made:
            made_peer.close()


def test_amqtt_is_the_version_the_held_acks_were_written_against() -> None:
    # _amqtt_held copies amqtt 0.12.1's Broker._run_broadcast and the outgoing QoS 1 flow, and
    # overrides the methods below: an upgrade must re-read them before moving on.
    import amqtt
    from amqtt.broker import Broker
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    assert amqtt.__version__.startswith("0.12."), amqtt.__version__
    for name in (
        "_handle_client_session",
        "_handle_message_delivery",
        "_broadcast_message",
        "_run_broadcast",
    ):
        assert callable(getattr(Broker, name, None)), name
    for name in ("handle_publish", "_handle_qos1_message_flow", "_handle_message_flow"):
        assert callable(getattr(BrokerProtocolHandler, name, None)), name
