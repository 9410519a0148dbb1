"""HTTP Range requests (RFC 9110 §14) for bundle downloads: one byte range, or the whole body.

What the agent needs is ``bytes=<have>-`` to resume; any single range form is honoured. A Range
the server may ignore (another unit, bad syntax, several ranges) gets the whole body (200), as
the RFC allows; a range that starts past the end is 416.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"bytes=(\d{1,19})?-(\d{1,19})?")


class Unsatisfiable(Exception):
    """The range lies wholly outside the body (answer 416 with ``bytes */<size>``)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of the one range asked for, or None for the whole body."""
    if header is None or len(header) > 100:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if first is None and last is None:
        return None
    if first is None:  # bytes=-N: the last N bytes
        suffix = int(last or 0)
        if suffix == 0:
            raise Unsatisfiable
        return max(size - suffix, 0), size
    start = int(first)
    end = size if last is None else min(int(last) + 1, size)
    if last is not None and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable
    return start, end


def if_range_matches(header: str | None, etag: str) -> bool:
    """A Range applies unless ``If-Range`` names another representation (bundles have no
    Last-Modified, so a date never matches)."""
    return header is None or header.strip() == etag
