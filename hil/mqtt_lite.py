"""Just enough MQTT 3.1.1 for a simulated device: one asyncio protocol per connection.

A paho client per device costs a client object, its queues and locks and a callback per socket
event; at 10,000 devices in a process that is most of the CPU. A simulated device needs CONNECT
(with a Last Will and a username/password), SUBSCRIBE, PUBLISH at QoS 0/1 both ways, PUBACK,
PINGREQ and DISCONNECT, over a connection the simulator never shares: that is this module.
Not supported (refused, not ignored): QoS 2, packets over :data:`MAX_PACKET`. Unacknowledged
QoS 1 publishes are not retransmitted after a reconnect (clean session, as the simulator uses).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass

from edgefleet.mqtt_frames import FrameError, frame, string, take_frame

#: Largest packet accepted from the broker (a desired state is a few hundred bytes).
MAX_PACKET = 1 << 20

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


class MqttProtocolError(ValueError):
    """The broker sent something this client does not speak (or garbage)."""


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_packet(
    client_id: str,
    *,
    username: str | None,
    password: str | None,
    will: Will | None,
    keepalive: int,
) -> bytes:
    flags = 0x02  # clean session
    payload = string(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += string(will.topic) + string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += string(username)
    if password is not None:
        flags |= 0x40
        payload += string(password)
    header = string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return frame(CONNECT << 4, header + payload)


def publish_packet(topic: str, payload: bytes, *, qos: int, retain: bool, packet_id: int) -> bytes:
    if qos not in (0, 1):
        raise ValueError("only QoS 0 and 1 are supported")
    first = (PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
    body = string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return frame(first, body)


def subscribe_packet(topic: str, *, qos: int, packet_id: int) -> bytes:
    return frame(
        (SUBSCRIBE << 4) | 0x02, struct.pack("!H", packet_id) + string(topic) + bytes([qos])
    )


def puback_packet(packet_id: int) -> bytes:
    return frame(PUBACK << 4, struct.pack("!H", packet_id))


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


@dataclass(frozen=True)
class Packet:
    kind: int
    flags: int
    body: bytes


def split_packets(buffer: bytearray) -> list[Packet]:
    """Take every complete packet off the front of ``buffer`` (the rest stays for later);
    :class:`MqttProtocolError` on a malformed length or an oversized packet."""
    packets: list[Packet] = []
    while True:
        try:
            taken = take_frame(buffer, MAX_PACKET)
        except FrameError as err:
            if err.too_long:
                raise MqttProtocolError(
                    f"packet of {err.length} bytes is over {MAX_PACKET}"
                ) from err
            raise MqttProtocolError(str(err)) from err
        if taken is None:
            return packets
        first, body = taken
        packets.append(Packet(first >> 4, first & 0x0F, body))


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    packet_id: int | None


def parse_publish(packet: Packet) -> Message:
    qos = (packet.flags >> 1) & 0x03
    if qos > 1:
        raise MqttProtocolError(f"QoS {qos} is not supported")
    body = packet.body
    if len(body) < 2:
        raise MqttProtocolError("PUBLISH without a topic")
    (size,) = struct.unpack_from("!H", body)
    end = 2 + size
    if len(body) < end + (2 if qos else 0):
        raise MqttProtocolError("PUBLISH shorter than its topic and packet id")
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError as err:
        raise MqttProtocolError("PUBLISH topic is not UTF-8") from err
    packet_id = None
    if qos:
        (packet_id,) = struct.unpack_from("!H", body, end)
        end += 2
    return Message(topic, body[end:], qos, bool(packet.flags & 0x01), packet_id)


class LiteClient(asyncio.Protocol):
    """One device's connection. ``on_connect()`` after CONNACK 0, ``on_message(msg)`` per
    PUBLISH (QoS 1 acknowledged after the callback), ``on_lost(reason)`` when it closes."""

    def __init__(
        self,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        will: Will | None = None,
        keepalive: int = 60,
    ) -> None:
        self.client_id = client_id
        self._connect = connect_packet(
            client_id, username=username, password=password, will=will, keepalive=keepalive
        )
        self.keepalive = keepalive
        self.transport: asyncio.Transport | None = None
        self.connected = False
        self.unacked = 0
        self.last_sent = 0.0
        self._buffer = bytearray()
        self._next_id = 0
        self.on_connect: Callable[[], None] = lambda: None
        self.on_message: Callable[[Message], None] = lambda _m: None
        self.on_lost: Callable[[str], None] = lambda _r: None

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._write(self._connect)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            for packet in split_packets(self._buffer):
                self._handle(packet)
        except MqttProtocolError as err:
            self._close(f"protocol error: {err}")

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.transport is not None
        self.connected = False
        self.transport = None
        self._buffer.clear()
        if was:
            self.on_lost(str(exc) if exc else "closed")

    # -- the client ----------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue a PUBLISH; False (nothing sent) when not connected."""
        if not self.connected:
            return False
        packet_id = self._packet_id() if qos else 0
        self._write(publish_packet(topic, payload, qos=qos, retain=retain, packet_id=packet_id))
        if qos:
            self.unacked += 1
        return True

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._write(subscribe_packet(topic, qos=qos, packet_id=self._packet_id()))

    def ping(self) -> None:
        self._write(PINGREQ_PACKET)

    def disconnect(self) -> None:
        """A clean DISCONNECT (the broker does not send the Will), then close."""
        if self.transport is not None:
            self._write(DISCONNECT_PACKET)
            self.transport.close()

    def _handle(self, packet: Packet) -> None:
        if packet.kind == CONNACK:
            if len(packet.body) != 2:
                raise MqttProtocolError("CONNACK is 2 bytes")
            if packet.body[1] != 0:
                self._close(f"connection refused (return code {packet.body[1]})")
                return
            self.connected = True
            self.on_connect()
        elif packet.kind == PUBLISH:
            message = parse_publish(packet)
            self.on_message(message)
            if message.packet_id is not None:
                self._write(puback_packet(message.packet_id))
        elif packet.kind == PUBACK:
            self.unacked = max(0, self.unacked - 1)
        elif packet.kind in (SUBACK, PINGRESP):
            return
        else:
            raise MqttProtocolError(f"unexpected packet type {packet.kind} from the broker")

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 0xFFFF + 1
        return self._next_id

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_sent = asyncio.get_running_loop().time()

    def _close(self, reason: str) -> None:
        self.connected = False
        if self.transport is not None:
            self.transport.abort()
        self.on_lost(reason)
        self.transport = None
