"""The ingest workers' batch MQTT v5 subscriber: against a real Mosquitto (exact topics and
payloads, QoS 1 acknowledged only when asked, unacknowledged messages come back within the
receive window) and against a hostile fake broker (refusals, oversized and malformed packets,
QoS 2, a DISCONNECT): every one a clear MqttError, never a hang or a crash."""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from edgefleet.mqtt import BrokerAddress, MqttError
from edgefleet.mqtt_frames import frame, string, varint
from fleet_server.messaging.batch_mqtt import BatchSubscriber
from tests.conftest import external_mqtt_url
from tests.fleet_server.helpers import MqttProbe

pytestmark = pytest.mark.integration


def test_receives_batches_and_acks_after_the_fact() -> None:
    url = external_mqtt_url()
    base = f"edgefleet-test/{secrets.token_hex(4)}"
    sub = BatchSubscriber(
        BrokerAddress.from_url(url),
        client_id=f"batch-{secrets.token_hex(4)}",
        filters=[f"{base}/a/#", f"{base}/b"],
        receive_maximum=20,
    )
    sub.connect()
    probe = MqttProbe(url)
    try:
        sent = [(f"{base}/a/{i % 3}", f"payload-{i}-é".encode()) for i in range(50)]
        sent.append((f"{base}/b", b""))
        for topic_name, payload in sent:
            probe.publish(topic_name, payload)
        got: list[tuple[str, bytes, int]] = []
        first = sub.receive(max_messages=100, timeout=5)
        # The broker stops at the receive window until we acknowledge.
        assert 1 <= len(first) <= 20
        got += [(m.topic, m.payload, m.packet_id) for m in first]
        sub.ack([m.packet_id for m in first])
        while len(got) < len(sent):
            batch = sub.receive(max_messages=7, timeout=5)
            assert batch, f"stalled after {len(got)} messages"
            assert len(batch) <= 7
            got += [(m.topic, m.payload, m.packet_id) for m in batch]
            sub.ack([m.packet_id for m in batch])
        assert [(t, p) for t, p, _ in got] == sent  # same order, exact bytes
        assert all(pid > 0 for *_, pid in got)
        assert sub.receive(max_messages=10, timeout=0.3) == []  # nothing redelivered
    finally:
        probe.close()
        sub.close()
    assert not sub.connected
    with pytest.raises(MqttError, match="not connected"):
        sub.receive(max_messages=1, timeout=0)


class FakeBroker:
    """Accepts one connection, answers CONNECT/SUBSCRIBE as told, then sends ``tail``."""

    def __init__(self, *, connack: bytes, suback: bytes | None = None, tail: bytes = b"") -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connack, self.suback, self.tail = connack, suback, tail
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(5)
            self.received += conn.recv(65536)
            conn.sendall(self.connack)
            if self.suback is not None:
                self.received += conn.recv(65536)
                conn.sendall(self.suback + self.tail)
            with contextlib.suppress(OSError):
                while data := conn.recv(65536):
                    self.received += data

    def close(self) -> None:
        self.server.close()


@contextmanager
def fake(**kwargs: bytes | None) -> Iterator[tuple[FakeBroker, BatchSubscriber]]:
    broker = FakeBroker(**kwargs)  # type: ignore[arg-type]
    sub = BatchSubscriber(
        BrokerAddress(host="127.0.0.1", port=broker.port, username="srv", password="pw"),  # noqa: S106 - a fake broker
        client_id="batch-test",
        filters=["x/#"],
        max_packet_bytes=1024,
    )
    try:
        yield broker, sub
    finally:
        sub.close()
        broker.close()


OK_CONNACK = frame(0x20, b"\x00\x00\x00")
OK_SUBACK = frame(0x90, b"\x00\x01\x00\x01")


def _publish(topic_name: str, payload: bytes, *, qos: int = 1, pid: int = 7) -> bytes:
    body = string(topic_name) + (struct.pack("!H", pid) if qos else b"") + b"\x00" + payload
    return frame(0x30 | (qos << 1), body)


def test_connect_packet_carries_v5_credentials_and_window() -> None:
    with fake(connack=OK_CONNACK, suback=OK_SUBACK, tail=_publish("x/1", b"hi")) as (broker, sub):
        sub.connect(timeout=5)
        (message,) = sub.receive(max_messages=10, timeout=5)
        assert (message.topic, message.payload, message.packet_id) == ("x/1", b"hi", 7)
        sub.ack([7, 0])
        sub.close()
        broker.thread.join(5)
    data = broker.received
    assert data.startswith(b"\x10") and b"\x00\x04MQTT\x05\xc2" in data  # v5, user+pw, clean
    assert b"\x00\x03srv" in data and b"\x00\x02pw" in data
    assert b"\x21\x03\xe8" in data  # Receive Maximum 1000
    assert b"\x00\x03x/#\x01" in data  # SUBSCRIBE x/# at QoS 1
    assert data.endswith(b"\x40\x02\x00\x07\xe0\x00")  # one PUBACK (QoS 0 id skipped), DISCONNECT


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connack": frame(0x20, b"\x00\x87\x00")}, "refused the connection"),
        ({"connack": OK_CONNACK, "suback": frame(0x90, b"\x00\x01\x00\x80")}, "refused"),
        ({"connack": b"\x20\xff\xff\xff\xff\x01"}, "malformed packet length"),
        ({"connack": frame(0x20, b"\x00\x00\x00" + b"x" * 2000)}, "over the 1024 limit"),
        ({"connack": frame(0xE0, b"\x8d")}, "disconnected us"),
        ({"connack": frame(0x90, b"\x00\x01\x00\x00")}, "unexpected packet"),
    ],
)
def test_hostile_handshakes_are_refused(kwargs: dict[str, bytes], match: str) -> None:
    with fake(**kwargs) as (_broker, sub), pytest.raises(MqttError, match=match):
        sub.connect(timeout=5)
    assert not sub.connected


@pytest.mark.parametrize(
    ("tail", "match"),
    [
        (_publish("x/1", b"a" * 2000), "over the 1024 limit"),
        (_publish("x/1", b"a", qos=2), "QoS 2"),
        (frame(0x32, b"\x00\x09x/"), "malformed PUBLISH"),
        (frame(0x32, b"\x00\x02\xff\xfe\x00\x01\x00"), "malformed PUBLISH"),
        (frame(0x32, string("x/1") + b"\x00\x01" + b"\x7f"), "malformed PUBLISH"),
        (frame(0xE0, b"\x8b"), "disconnected us"),
        (frame(0x50, b"\x00\x01"), "unexpected packet type 5"),
        (b"", "closed the connection"),
    ],
)
def test_hostile_messages_end_the_connection(tail: bytes, match: str) -> None:
    with fake(connack=OK_CONNACK, suback=OK_SUBACK, tail=tail) as (broker, sub):
        sub.connect(timeout=5)
        if not tail:
            broker.server.close()
        with pytest.raises(MqttError, match=match):
            for _ in range(20):
                sub.receive(max_messages=10, timeout=1)
                if not tail:
                    broker.thread.join(0)
        assert not sub.connected


def test_nothing_to_connect_to() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    sub = BatchSubscriber(BrokerAddress(host="127.0.0.1", port=port), client_id="c", filters=["x"])
    with pytest.raises(MqttError, match="cannot connect"):
        sub.connect(timeout=2)
    with pytest.raises(ValueError, match="receive_maximum"):
        BatchSubscriber(BrokerAddress(host="h"), client_id="c", filters=["x"], receive_maximum=0)
    assert varint(321) == b"\xc1\x02"


def test_a_silent_broker_is_a_dead_link() -> None:
    """Handshake, then nothing (not even PINGRESP): given up after 1.5 keep-alive periods."""
    broker = FakeBroker(connack=OK_CONNACK, suback=OK_SUBACK)
    sub = BatchSubscriber(
        BrokerAddress(host="127.0.0.1", port=broker.port), client_id="c", filters=["x"], keepalive=1
    )
    try:
        sub.connect(timeout=5)
        with pytest.raises(MqttError, match="nothing from"):
            for _ in range(30):
                sub.receive(max_messages=1, timeout=0.2)
        assert b"\xc0\x00" in broker.received  # it did ping first
    finally:
        sub.close()
        broker.close()
