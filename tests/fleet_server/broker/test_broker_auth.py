"""The embedded broker with an authenticator: who gets in, and what each identity may do.

Real paho clients against a real embedded broker; the authenticator is a dict, so these tests
hold the broker to the rule alone (the database-backed one is tested in test_mqtt_auth.py).
The server identity subscribes to ``edgefleet/#`` and proves what did, and did not, arrive.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from edgefleet.contract.topics import Channel, topic
from fleet_server.broker import EmbeddedBroker, Identity

if TYPE_CHECKING:
    from tests.fleet_server.broker.conftest import ClientFactory, RefusalProbe

pytestmark = pytest.mark.integration

SERVER = ("edgefleet.server", "server-password-0123456789abcdef")


class DictAuthenticator:
    """user name → password; the server user gets everything, anyone else is a device."""

    def __init__(self, devices: dict[str, str]) -> None:
        self.devices = devices
        self.calls: list[str] = []
        self.fail = False

    def authenticate(self, *, username: str, password: str) -> Identity | None:
        self.calls.append(username)
        if self.fail:
            raise RuntimeError("database is down")
        if (username, password) == SERVER:
            return Identity.server(username)
        if self.devices.get(username) == password:
            return Identity.device(username)
        return None


def _ids() -> tuple[str, str]:
    run = secrets.token_hex(3)
    return f"dev-a-{run}", f"dev-b-{run}"


@pytest.fixture
def secured(
    start_broker: Callable[..., EmbeddedBroker],
) -> tuple[EmbeddedBroker, DictAuthenticator, str, str]:
    a, b = _ids()
    auth = DictAuthenticator({a: "token-a", b: "token-b"})
    broker = start_broker(authenticator=auth)
    assert broker.requires_auth
    return broker, auth, a, b


def test_credentials_are_required(
    secured: tuple[EmbeddedBroker, DictAuthenticator, str, str],
    connect: ClientFactory,
    refused: RefusalProbe,
) -> None:
    broker, _auth, a, b = secured
    assert "user name or password" in refused(broker.url, "anon").lower()
    assert refused(broker.url, "wrong", credentials=(a, "token-b"))
    assert refused(broker.url, "unknown", credentials=("nobody", "token-a"))
    assert refused(broker.url, "empty", credentials=(a, ""))
    assert refused(broker.url, "server-wrong", credentials=(SERVER[0], "token-a"))
    assert refused(broker.url, "huge", credentials=(a, "x" * 60_000))
    connect(broker.url, f"agent-{a}", credentials=(a, "token-a"))
    connect(broker.url, "server", credentials=SERVER)


def test_a_device_cannot_publish_as_another(
    secured: tuple[EmbeddedBroker, DictAuthenticator, str, str], connect: ClientFactory
) -> None:
    broker, _auth, a, b = secured
    server = connect(broker.url, "server", credentials=SERVER)
    server.subscribe("edgefleet/#")
    device = connect(broker.url, f"agent-{a}", credentials=(a, "token-a"))
    for channel in (
        Channel.TELEMETRY,
        Channel.STATE,
        Channel.EVENTS,
        Channel.STATUS,
        Channel.RESULTS,
    ):
        device.publish(topic(b, channel), b"forged", retain=channel == Channel.STATE)
    device.publish(topic(a, Channel.DESIRED), b"self-assigned", retain=True)
    device.publish("elsewhere/x", b"forged")
    device.publish(topic(a, Channel.TELEMETRY), b"mine")
    device.publish(topic(a, Channel.RESULTS), b"my result")
    got = server.wait_for(2)
    assert [(m.topic, m.payload) for m in got] == [
        (topic(a, Channel.TELEMETRY), b"mine"),
        (topic(a, Channel.RESULTS), b"my result"),
    ]
    assert device.connected, "amqtt drops a refused PUBLISH and keeps the connection"

    # Nothing forged was retained either: a later subscriber to b's state gets nothing.
    late = connect(broker.url, "server-late", credentials=SERVER)
    late.subscribe(topic(b, Channel.STATE))
    late.subscribe(topic(a, Channel.DESIRED))
    assert late.wait_for(1, timeout=0.5) == []


def test_a_device_subscribes_only_to_its_own_desired(
    secured: tuple[EmbeddedBroker, DictAuthenticator, str, str], connect: ClientFactory
) -> None:
    broker, _auth, a, b = secured
    server = connect(broker.url, "server", credentials=SERVER)
    server.publish(topic(a, Channel.DESIRED), b"for-a", retain=True)
    server.publish(topic(b, Channel.DESIRED), b"for-b", retain=True)
    device = connect(broker.url, f"agent-{a}", credentials=(a, "token-a"))
    for refused_filter in (
        topic(b, Channel.DESIRED),
        "edgefleet/#",
        "edgefleet/v1/+/desired",
        f"edgefleet/v1/{a}/#",
        topic(a, Channel.TELEMETRY),
        "#",
    ):
        assert device.suback(refused_filter) == [0x80], refused_filter
    assert device.suback(topic(a, Channel.DESIRED)) == [1]
    got = device.wait_for(1)
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        (topic(a, Channel.DESIRED), b"for-a", True)
    ]
    server.publish(topic(b, Channel.DESIRED), b"for-b-2", retain=True)
    server.publish(topic(a, Channel.DESIRED), b"for-a-2", retain=True)
    assert [m.payload for m in device.wait_for(2)] == [b"for-a", b"for-a-2"]


def test_last_will_on_own_status_works_and_on_another_is_refused(
    secured: tuple[EmbeddedBroker, DictAuthenticator, str, str],
    connect: ClientFactory,
    refused: RefusalProbe,
) -> None:
    broker, _auth, a, b = secured
    server = connect(broker.url, "server", credentials=SERVER)
    server.subscribe("edgefleet/v1/+/status")
    reason = refused(
        broker.url,
        f"agent-{a}-forger",
        credentials=(a, "token-a"),
        will=(topic(b, Channel.STATUS), b"offline"),
    )
    assert "authori" in reason.lower()
    device = connect(
        broker.url,
        f"agent-{a}",
        credentials=(a, "token-a"),
        will=(topic(a, Channel.STATUS), b'{"status":"offline"}'),
    )
    device.kill_socket()
    got = server.wait_for(1)
    assert [(m.topic, m.payload) for m in got] == [
        (topic(a, Channel.STATUS), b'{"status":"offline"}')
    ]


def test_client_ids_cannot_be_taken_over_by_another_user(
    secured: tuple[EmbeddedBroker, DictAuthenticator, str, str],
    connect: ClientFactory,
    refused: RefusalProbe,
) -> None:
    broker, _auth, a, b = secured
    server = connect(broker.url, "fleet-server", credentials=SERVER)
    server.subscribe("edgefleet/#")
    victim = connect(broker.url, f"agent-{a}", credentials=(a, "token-a"))
    # Neither a stranger nor another device can evict a's session or the server's: a device's
    # client id is its user name, whatever its CONNECT says.
    intruder = connect(broker.url, f"agent-{a}", credentials=(b, "token-b"))
    squatter = connect(broker.url, "fleet-server", credentials=(b, "token-b"))
    assert refused(broker.url, "fleet-server", credentials=(SERVER[0], "guess"))
    assert refused(broker.url, "fleet-server")
    victim.publish(topic(a, Channel.TELEMETRY), b"still here")
    assert [m.payload for m in server.wait_for(1)] == [b"still here"]
    assert victim.connected and server.connected
    assert squatter.connected and intruder is not None


def test_a_failing_authenticator_refuses_and_the_broker_survives(
    secured: tuple[EmbeddedBroker, DictAuthenticator, str, str],
    connect: ClientFactory,
    refused: RefusalProbe,
) -> None:
    broker, auth, a, _b = secured
    auth.fail = True
    assert refused(broker.url, f"agent-{a}", credentials=(a, "token-a"))
    auth.fail = False
    connect(broker.url, f"agent-{a}", credentials=(a, "token-a"))


def _connect_packet(*, flags: int, payload: bytes) -> bytes:
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x3c" + payload
    return b"\x10" + bytes([len(body)]) + body


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


@pytest.mark.parametrize(
    ("flags", "payload", "name"),
    [
        (0x02, _field(b"raw-anon"), "no credentials"),
        (0x42, _field(b"raw-pw-only") + _field(b"token-a"), "password without user name"),
        (0x82, _field(b"raw-empty-user") + _field(b""), "empty user name"),
        (0xC2, _field(b"raw-bad-utf8") + _field(b"\xff\xfe") + _field(b"x"), "bad UTF-8 user"),
    ],
)
def test_hostile_connect_packets_are_refused(
    secured: tuple[EmbeddedBroker, DictAuthenticator, str, str],
    connect: ClientFactory,
    flags: int,
    payload: bytes,
    name: str,
) -> None:
    broker, _auth, a, _b = secured
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(_connect_packet(flags=flags, payload=payload))
        answer = _read_all(sock)
    # Either a CONNACK with a non-zero return code, or the connection closed: never accepted.
    assert answer[:2] != b"\x20\x02" or answer[3] != 0, f"{name} was accepted: {answer!r}"
    connect(broker.url, f"agent-{a}", credentials=(a, "token-a"))  # and the broker still works


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    done = threading.Event()
    sock.settimeout(3)
    while not done.is_set():
        try:
            chunk = sock.recv(64)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_amqtt_is_the_version_the_access_layer_was_written_against() -> None:
    # _amqtt_access re-implements Broker._initialize_client_session of amqtt 0.12.1: an
    # upgrade must re-read that method (and keep the tests above passing) before moving on.
    import amqtt

    assert amqtt.__version__.startswith("0.12."), amqtt.__version__
