"""MQTT framing shared by the batch subscriber and the simulated devices' client."""

from __future__ import annotations

import pytest

from edgefleet.mqtt_frames import MAX_REMAINING, FrameError, frame, string, take_frame, varint


@pytest.mark.parametrize("length", [0, 127, 128, 16_383, 16_384, 2_097_151, MAX_REMAINING])
def test_a_frame_of_any_length_comes_back_whole_and_only_when_complete(length: int) -> None:
    body = b"x" * min(length, 20_000)
    data = frame(0x30, body)
    buffer = bytearray(data[:-1] if body else data[:1])
    assert take_frame(buffer, 1 << 30) is None  # not all here yet: nothing taken
    assert len(buffer) == max(len(data) - 1, 1)
    if len(body) == length:
        buffer = bytearray(data + b"\x30")  # and the start of the next
        assert take_frame(buffer, 1 << 30) == (0x30, body)
        assert buffer == bytearray(b"\x30")
    else:
        assert varint(length)[-1] < 0x80 and len(varint(length)) == (length.bit_length() + 6) // 7


def test_hostile_lengths_and_values() -> None:
    with pytest.raises(FrameError, match="longer than 4 bytes") as malformed:
        take_frame(bytearray(b"\x30\xff\xff\xff\xff\x01"), 1 << 30)
    assert not malformed.value.too_long
    with pytest.raises(FrameError) as too_long:
        take_frame(bytearray(b"\x30\x81\x08"), 1024)
    assert too_long.value.too_long and too_long.value.length == 1025
    for bad in (-1, MAX_REMAINING + 1):
        with pytest.raises(ValueError, match="out of range"):
            varint(bad)
    with pytest.raises(ValueError, match="65535"):
        string(b"x" * 65_536)
    assert string("é") == b"\x00\x02\xc3\xa9"
