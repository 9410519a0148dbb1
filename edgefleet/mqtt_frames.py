"""MQTT's fixed-header framing, shared by the hand-written clients: the ingest workers' batch
subscriber (:mod:`fleet_server.messaging.batch_mqtt`, MQTT 5) and the simulated devices'
asyncio client (:mod:`hil.mqtt_lite`, MQTT 3.1.1). Standard library only.

Encoding: the variable-length "remaining length", length-prefixed UTF-8 strings, a packet from
its first byte and body. Decoding: :func:`take_frame` takes one complete packet off the front of
a receive buffer. Malformed input is a :class:`FrameError` (``too_long`` tells an over-limit
packet from a malformed length); each client converts it to its own error at its boundary.
"""

from __future__ import annotations

import struct

#: The largest remaining length MQTT can encode (four length bytes).
MAX_REMAINING = 268_435_455


class FrameError(ValueError):
    """A malformed remaining length, or a packet over the reader's limit (``too_long``)."""

    def __init__(self, message: str, *, length: int | None = None) -> None:
        super().__init__(message)
        #: The announced length of a packet over the limit (None: the length is malformed).
        self.length = length

    @property
    def too_long(self) -> bool:
        return self.length is not None


def varint(value: int) -> bytes:
    """The remaining-length encoding of ``value`` (0..268,435,455)."""
    if value < 0 or value > MAX_REMAINING:
        raise ValueError(f"remaining length {value} out of range")
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def string(value: str | bytes) -> bytes:
    """A two-byte length and the bytes (text as UTF-8); at most 65,535 bytes."""
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65535 bytes")
    return struct.pack("!H", len(data)) + data


def frame(first: int, body: bytes) -> bytes:
    """A packet: its first byte (type and flags), the remaining length, the body."""
    return bytes([first]) + varint(len(body)) + body


def take_frame(buffer: bytearray, max_bytes: int) -> tuple[int, bytes] | None:
    """Take the first complete packet off ``buffer`` as (first byte, body), or None when it is
    not all there yet (the buffer is left as it was). :class:`FrameError` when the length runs
    over four bytes or announces more than ``max_bytes``."""
    if len(buffer) < 2:
        return None
    length, shift, pos = 0, 0, 1
    while True:
        if pos >= len(buffer):
            return None  # the length is not all here yet
        byte = buffer[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
        if pos > 4:
            raise FrameError("remaining length longer than 4 bytes")
    if length > max_bytes:
        raise FrameError(f"packet of {length} bytes over {max_bytes}", length=length)
    if len(buffer) < pos + length:
        return None
    first, body = buffer[0], bytes(buffer[pos : pos + length])
    del buffer[: pos + length]
    return first, body
