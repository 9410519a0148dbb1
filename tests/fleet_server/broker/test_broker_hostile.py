"""Hostile and broken clients: garbage, oversized packets, silence, floods. The broker survives.

Each test ends by checking that a well-behaved client still gets a message through.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from edgefleet.contract.topics import Channel, topic
from fleet_server.broker import EmbeddedBroker

if TYPE_CHECKING:
    from tests.fleet_server.broker.conftest import ClientFactory

pytestmark = pytest.mark.integration

StartBroker = Callable[..., EmbeddedBroker]


def _connect_packet(client_id: bytes, *, keepalive: int = 30) -> bytes:
    body = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big")
    body += len(client_id).to_bytes(2, "big") + client_id
    return bytes([0x10, len(body)]) + body


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the broker closes the connection (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sock.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def _wait_no_connections(broker: EmbeddedBroker) -> None:
    deadline = time.monotonic() + 5
    while broker.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.open_connections == 0


def _still_works(url: str, connect: ClientFactory, tag: str) -> None:
    device = f"ok-{tag}"
    events = topic(device, Channel.EVENTS)
    listener = connect(url, f"listen-{tag}")
    listener.subscribe(events)
    connect(url, device).publish(events, b"still here")
    assert [m.payload for m in listener.wait_for(1)] == [b"still here"]


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)) * 8,
        b"\x10\xff\xff\xff\xff\xff",  # remaining length with too many continuation bytes
        b"\x10\x05\x00\x04MQ",  # truncated CONNECT, then EOF
        b"\x30\x02\x00\x00",  # PUBLISH before CONNECT
        b"\x10\x0c\x00\x06MQIsdp\x03\x02\x00\x1e",  # MQTT 3.1 (unsupported) without a client id
    ],
    ids=["http", "bytes", "length", "truncated", "publish-first", "mqtt31"],
)
def test_garbage_closes_that_connection_only(
    start_broker: StartBroker, connect: ClientFactory, garbage: bytes
) -> None:
    broker = start_broker()
    with socket.create_connection(("127.0.0.1", broker.port)) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        assert _closed_by_peer(sock, timeout=3)
    _still_works(broker.url, connect, "garbage")
    assert broker.running


def test_random_bytes_after_a_valid_connect(
    start_broker: StartBroker, connect: ClientFactory
) -> None:
    broker = start_broker()
    for seed in range(20):
        with socket.create_connection(("127.0.0.1", broker.port)) as sock:
            sock.sendall(_connect_packet(f"fuzz-{seed}".encode()))
            assert sock.recv(4)[:1] == b"\x20"  # CONNACK
            sock.sendall(os.urandom(2048))
            # Random bytes may parse as a packet whose body never comes; the broker then waits
            # (for the keep-alive) like Mosquitto does. Closing our side must free the connection.
            sock.shutdown(socket.SHUT_WR)
            assert _closed_by_peer(sock, timeout=3)
    _wait_no_connections(broker)
    _still_works(broker.url, connect, "fuzz")


def test_oversized_packet_is_refused_before_it_is_read(
    start_broker: StartBroker, connect: ClientFactory
) -> None:
    broker = start_broker(max_packet_bytes=64 * 1024 + 4096)
    with socket.create_connection(("127.0.0.1", broker.port)) as sock:
        sock.sendall(_connect_packet(b"big"))
        assert sock.recv(4)[:1] == b"\x20"
        # PUBLISH announcing 200 MB: the broker must hang up without waiting for the body.
        sock.sendall(b"\x30\x80\x80\xc0\x5f" + b"\x00\x01t" + b"x" * 1000)
        assert _closed_by_peer(sock, timeout=3)
    _still_works(broker.url, connect, "oversize")


def test_payload_just_over_the_limit_drops_the_sender(
    start_broker: StartBroker, connect: ClientFactory
) -> None:
    broker = start_broker(max_packet_bytes=8 * 1024)
    topic_name = topic("dev-limit", Channel.EVENTS)
    listener = connect(broker.url, "listen-limit")
    listener.subscribe(topic_name)
    sender = connect(broker.url, "dev-limit")
    sender.publish(topic_name, b"a" * 4000)
    info = sender.mqtt.publish(topic_name, b"b" * (9 * 1024), qos=1)
    info.wait_for_publish(timeout=1.0)  # never acknowledged: the broker hangs up instead
    assert [len(m.payload) for m in listener.wait_for(2, timeout=1)] == [4000]
    assert not info.is_published()


def test_a_connection_that_never_sends_connect_is_closed(
    start_broker: StartBroker, connect: ClientFactory
) -> None:
    broker = start_broker(connect_timeout=0.5)
    with socket.create_connection(("127.0.0.1", broker.port)) as sock:
        sock.sendall(b"\x10")  # one byte, then silence
        started = time.monotonic()
        assert _closed_by_peer(sock, timeout=5)
        assert time.monotonic() - started < 3
    _still_works(broker.url, connect, "slow")


def test_silent_client_is_dropped_after_keepalive_and_its_will_fires(
    start_broker: StartBroker, connect: ClientFactory
) -> None:
    broker = start_broker()
    status = topic("dev-silent", Channel.STATUS)
    watcher = connect(broker.url, "watch-silent")
    watcher.subscribe(status)
    agent = connect(broker.url, "dev-silent", will=(status, b"offline"), keepalive=1)
    agent.mqtt.loop_stop()  # no more PINGREQ: the socket stays open, the device is gone
    started = time.monotonic()
    got = watcher.wait_for(1, timeout=5)
    assert [m.payload for m in got] == [b"offline"]
    assert time.monotonic() - started < 4


def test_connections_beyond_the_cap_are_closed(
    start_broker: StartBroker, connect: ClientFactory
) -> None:
    broker = start_broker(max_connections=3)
    held = [socket.create_connection(("127.0.0.1", broker.port)) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(_connect_packet(f"held-{held.index(sock)}".encode()))
            assert sock.recv(4)[:1] == b"\x20"
        with socket.create_connection(("127.0.0.1", broker.port)) as extra:
            assert _closed_by_peer(extra, timeout=3)
    finally:
        for sock in held:
            sock.close()
    _wait_no_connections(broker)
    _still_works(broker.url, connect, "cap")


def test_many_half_open_probes_do_not_leak_connections(start_broker: StartBroker) -> None:
    broker = start_broker()
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", broker.port)):
            pass
    _wait_no_connections(broker)
