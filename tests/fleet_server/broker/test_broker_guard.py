"""GuardedReader framing, read the way amqtt reads: header byte, length bytes, body."""

from __future__ import annotations

import asyncio

import pytest

from fleet_server.broker._amqtt import ConnectionRefused, GuardedReader


def _connect(keepalive: int) -> bytes:
    body = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big") + b"\x00\x02id"
    return bytes([0x10, len(body)]) + body


async def _read_packet(reader: GuardedReader) -> bytes:
    raw = await reader.read(1)
    length, shift = 0, 0
    while True:
        byte = await reader.read(1)
        raw += byte
        length += (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return raw + (await reader.read(length) if length else b"")


def _guard(data: bytes, *, max_packet: int = 1024, connect_timeout: float = 5.0) -> GuardedReader:
    """A guard over an in-memory stream; expiry ends the stream as aborting a socket would."""
    stream = asyncio.StreamReader()
    stream.feed_data(data)
    return GuardedReader(
        stream,
        max_packet_bytes=max_packet,
        connect_timeout=connect_timeout,
        on_expire=stream.feed_eof,
    )


def test_packets_are_framed_and_the_keepalive_is_read_from_connect() -> None:
    async def run() -> None:
        publish = b"\x30\x0a\x00\x03a/bhello"
        guard = _guard(_connect(7) + b"\xc0\x00" + publish)
        assert (await _read_packet(guard)).startswith(b"\x10")
        assert guard.keepalive == 7.0
        assert not guard.awaiting_connect
        assert await _read_packet(guard) == b"\xc0\x00"
        assert await _read_packet(guard) == publish

    asyncio.run(run())


def test_keepalive_zero_means_no_idle_limit() -> None:
    async def run() -> None:
        stream = asyncio.StreamReader()
        stream.feed_data(_connect(0))
        guard = GuardedReader(
            stream, max_packet_bytes=1024, connect_timeout=0.1, on_expire=stream.feed_eof
        )
        assert guard.awaiting_connect
        await _read_packet(guard)
        assert not guard.awaiting_connect
        assert guard.keepalive is None
        await asyncio.sleep(0.2)  # past the CONNECT deadline: it no longer applies
        stream.feed_data(b"\xc0\x00")
        assert await _read_packet(guard) == b"\xc0\x00"

    asyncio.run(run())


def test_two_byte_length_at_the_limit_is_accepted_and_one_more_refused() -> None:
    async def run() -> None:
        ok = b"\x30\x80\x08" + b"x" * 1024  # 1024 = 0x80 0x08
        guard = _guard(_connect(5) + ok, max_packet=1024)
        await _read_packet(guard)
        assert len(await _read_packet(guard)) == 3 + 1024

        over = b"\x30\x81\x08"  # 1025
        guard = _guard(_connect(5) + over, max_packet=1024)
        await _read_packet(guard)
        with pytest.raises(ConnectionRefused, match="1025 bytes exceeds 1024"):
            await _read_packet(guard)
        with pytest.raises(ConnectionRefused):  # stays refused
            await guard.read(1)

    asyncio.run(run())


def test_five_length_bytes_are_malformed() -> None:
    async def run() -> None:
        guard = _guard(b"\x10\xff\xff\xff\xff\x01")
        with pytest.raises(ConnectionRefused, match="malformed remaining length"):
            await _read_packet(guard)

    asyncio.run(run())


def test_silence_before_connect_hits_the_deadline() -> None:
    async def run() -> None:
        guard = _guard(b"\x10", connect_timeout=0.1)
        await guard.read(1)
        with pytest.raises(ConnectionRefused, match="no CONNECT packet in time"):
            await guard.read(1)
        with pytest.raises(ConnectionRefused):  # and stays refused
            await guard.read(1)

    asyncio.run(run())


def test_keepalive_expires_one_and_a_half_periods_after_the_last_byte() -> None:
    async def run() -> None:
        guard = _guard(_connect(1))
        await _read_packet(guard)
        assert guard.keepalive == 1.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        # amqtt wraps each header read in wait_for(keepalive) and simply retries on timeout:
        # the guard's deadline must not restart with each retry.
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(guard.read(1), 0.4)
        with pytest.raises(ConnectionRefused, match="keep-alive expired"):
            await guard.read(1)
        assert 1.4 < loop.time() - started < 2.0
        guard.close()

    asyncio.run(run())


def test_traffic_pushes_the_keepalive_deadline_back() -> None:
    async def run() -> None:
        stream = asyncio.StreamReader()
        stream.feed_data(_connect(1))
        guard = GuardedReader(
            stream, max_packet_bytes=1024, connect_timeout=5, on_expire=stream.feed_eof
        )
        await _read_packet(guard)
        for _ in range(4):  # a PINGREQ every 0.6 s keeps a 1 s keep-alive client connected
            await asyncio.sleep(0.6)
            stream.feed_data(b"\xc0\x00")
            assert await _read_packet(guard) == b"\xc0\x00"
        assert guard.refused is None
        guard.close()

    asyncio.run(run())
