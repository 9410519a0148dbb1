"""The light MQTT codec: exact bytes out, and what it does with garbage from a broker."""

from __future__ import annotations

import asyncio

import pytest

from hil.mqtt_lite import (
    MAX_PACKET,
    PUBLISH,
    LiteClient,
    MqttProtocolError,
    Packet,
    Will,
    connect_packet,
    parse_publish,
    publish_packet,
    split_packets,
    subscribe_packet,
)


def test_connect_bytes_match_mqtt_311() -> None:
    packet = connect_packet(
        "d1",
        username="u",
        password="p",  # noqa: S106 (bytes on the wire, not a secret)
        will=Will("t", b"x", qos=1, retain=True),
        keepalive=60,
    )
    # CONNECT, remaining 26: "MQTT" level 4, flags user|pass|will-retain|will-qos1|will|clean
    assert packet == (
        b"\x10\x1a\x00\x04MQTT\x04\xee\x00\x3c\x00\x02d1\x00\x01t\x00\x01x\x00\x01u\x00\x01p"
    )


def test_publish_and_subscribe_bytes() -> None:
    assert publish_packet("a/b", b"hi", qos=1, retain=True, packet_id=7) == (
        b"\x33\x09\x00\x03a/b\x00\x07hi"
    )
    assert publish_packet("a", b"", qos=0, retain=False, packet_id=0) == b"\x30\x03\x00\x01a"
    assert subscribe_packet("x/#", qos=1, packet_id=2) == b"\x82\x08\x00\x02\x00\x03x/#\x01"
    with pytest.raises(ValueError, match="QoS"):
        publish_packet("a", b"", qos=2, retain=False, packet_id=1)


def test_packets_split_across_reads_and_glued_together() -> None:
    wire = publish_packet("t", b"1" * 300, qos=1, retain=False, packet_id=1) + publish_packet(
        "t", b"2", qos=0, retain=True, packet_id=0
    )
    buffer = bytearray()
    seen = []
    for byte in wire:  # one byte at a time: a two-byte remaining length arrives split
        buffer.append(byte)
        seen.extend(split_packets(buffer))
    assert [p.kind for p in seen] == [PUBLISH, PUBLISH]
    first, second = (parse_publish(p) for p in seen)
    assert (first.topic, first.payload, first.qos, first.packet_id) == ("t", b"1" * 300, 1, 1)
    assert (second.payload, second.retain, second.packet_id) == (b"2", True, None)
    assert buffer == bytearray()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "longer than 4 bytes"),
        (b"\x30\xff\xff\xff\x7f", f"over {MAX_PACKET}"),
    ],
)
def test_malformed_lengths_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(MqttProtocolError, match=message):
        split_packets(bytearray(data))


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (Packet(PUBLISH, 0x04, b"\x00\x01t\x00\x01"), "QoS 2"),
        (Packet(PUBLISH, 0x00, b"\x00"), "without a topic"),
        (Packet(PUBLISH, 0x02, b"\x00\x05ab"), "shorter"),
        (Packet(PUBLISH, 0x02, b"\x00\x01t\x00"), "shorter"),
        (Packet(PUBLISH, 0x00, b"\x00\x02\xff\xfe"), "UTF-8"),
    ],
)
def test_hostile_publishes_are_refused(packet: Packet, message: str) -> None:
    with pytest.raises(MqttProtocolError, match=message):
        parse_publish(packet)


async def _against(reply: bytes) -> tuple[LiteClient, bytes, list[str]]:
    """Connect a client to a loopback "broker" that reads the CONNECT and sends ``reply``."""
    received = bytearray()
    lost: list[str] = []
    done = asyncio.Event()

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read(1024))
        writer.write(reply)
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = LiteClient("d", username="u", password="p", keepalive=30)  # noqa: S106 (a test value)

    def on_lost(reason: str) -> None:
        lost.append(reason)
        done.set()

    client.on_lost = on_lost
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: client, "127.0.0.1", port)
    await asyncio.wait_for(done.wait(), 10)
    server.close()
    return client, bytes(received), lost


def test_a_client_closes_on_garbage_from_the_broker_and_says_why() -> None:
    # CONNACK accepted, then PUBREC: a QoS 2 flow it does not speak.
    client, received, lost = asyncio.run(_against(b"\x20\x02\x00\x00\x50\x02\x00\x01"))
    assert received.startswith(b"\x10") and b"MQTT" in received  # the CONNECT went out
    assert not client.connected and client.transport is None
    assert lost == ["protocol error: unexpected packet type 5 from the broker"]


def test_a_refused_connection_is_reported() -> None:
    client, _received, lost = asyncio.run(_against(b"\x20\x02\x00\x05"))  # not authorised
    assert not client.connected
    assert lost == ["connection refused (return code 5)"]


def test_an_oversized_packet_from_the_broker_closes_the_connection() -> None:
    _client, _received, lost = asyncio.run(_against(b"\x20\x02\x00\x00\x30\xff\xff\xff\x7f"))
    assert lost == [f"protocol error: packet of 268435455 bytes is over {MAX_PACKET}"]
