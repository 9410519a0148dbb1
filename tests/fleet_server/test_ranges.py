"""Parsing the Range header of bundle downloads (hostile and odd values included)."""

from __future__ import annotations

import pytest

from fleet_server.api.ranges import Unsatisfiable, byte_range, if_range_matches

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, SIZE)),
        ("bytes=999-", (999, SIZE)),
        ("bytes=990-5000", (990, SIZE)),
        ("bytes=-10", (990, SIZE)),
        ("bytes=-5000", (0, SIZE)),
        (" bytes = 5 - 9 ", (5, 10)),
        (None, None),
        ("", None),
        ("bytes=", None),
        ("bytes=-", None),
        ("bytes=9-2", None),
        ("bytes=0-1,5-9", None),
        ("items=0-5", None),
        ("bytes=a-b", None),
        ("bytes=1-2-3", None),
        ("bytes=" + "9" * 20 + "-", None),
        ("bytes=0-" + "1" * 200, None),
        ("bytes=\x00-1", None),
    ],
)
def test_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, SIZE) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, SIZE)


def test_if_range() -> None:
    assert if_range_matches(None, '"abc"')
    assert if_range_matches(' "abc" ', '"abc"')
    assert not if_range_matches('"abd"', '"abc"')
    assert not if_range_matches("Mon, 23 Nov 2026 00:00:00 GMT", '"abc"')
