"""Streaming a multipart upload's ``bundle`` field to a file, enforcing the size limit as the
bytes arrive (nothing is buffered whole in memory)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from fleet_server.services.errors import BadRequest, TooLarge, UnsupportedMediaType

FIELD = "bundle"
#: Room for multipart boundaries and headers on top of the bundle itself.
_OVERHEAD = 64 * 1024
#: Other (ignored) form fields may not add up to more than this.
_MAX_OTHER_BYTES = 64 * 1024


class _Sink:
    """Collects parser callbacks; writes the ``bundle`` part to ``out``."""

    def __init__(self, out: BinaryIO, max_bytes: int) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.other_bytes = 0
        self.found = False
        self._in_bundle = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self.error: Exception | None = None

    def on_part_begin(self) -> None:
        self._in_bundle = False
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") == FIELD.encode():
            if self.found:
                raise BadRequest(f"the form has more than one {FIELD!r} field")
            self.found = True
            self._in_bundle = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        length = end - start
        if not self._in_bundle:
            self.other_bytes += length
            if self.other_bytes > _MAX_OTHER_BYTES:
                raise BadRequest("form fields other than 'bundle' are too large")
            return
        self.size += length
        if self.size > self.max_bytes:
            raise TooLarge(f"bundle is larger than the limit of {self.max_bytes} bytes")
        chunk = data[start:end]
        self.digest.update(chunk)
        self.out.write(chunk)

    def on_part_end(self) -> None:
        self._in_bundle = False


class MultipartSink(Protocol):
    """python-multipart's parser callbacks, as the sinks of both uploads implement them."""

    def on_part_begin(self) -> None: ...
    def on_header_field(self, data: bytes, start: int, end: int) -> None: ...
    def on_header_value(self, data: bytes, start: int, end: int) -> None: ...
    def on_header_end(self) -> None: ...
    def on_headers_finished(self) -> None: ...
    def on_part_data(self, data: bytes, start: int, end: int) -> None: ...
    def on_part_end(self) -> None: ...


def form_boundary(
    content_type: str | None,
    content_length: str | None,
    *,
    limit: int,
    expected: str,
    too_large: str,
) -> bytes:
    """The multipart boundary of a form upload, refusing a body that is not multipart (415,
    ``expected``) or declares more than ``limit`` bytes (413, ``too_large``) before any is read."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedMediaType(expected)
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError as err:
            raise BadRequest("invalid Content-Length") from err
        if declared > limit:
            raise TooLarge(too_large)
    return bytes(params[b"boundary"])


async def feed_multipart(
    boundary: bytes, sink: MultipartSink, stream: AsyncIterator[bytes]
) -> None:
    """Stream ``stream`` through the multipart parser into ``sink`` (a malformed body is 400;
    the sink's own refusals, e.g. 413 past its limit, pass through)."""
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": sink.on_part_begin,
            "on_part_data": sink.on_part_data,
            "on_part_end": sink.on_part_end,
            "on_header_field": sink.on_header_field,
            "on_header_value": sink.on_header_value,
            "on_header_end": sink.on_header_end,
            "on_headers_finished": sink.on_headers_finished,
        },
    )
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as err:
        raise BadRequest(f"malformed multipart body: {err}") from err


async def receive_bundle(
    *,
    content_type: str | None,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    dest: Path,
    max_bytes: int,
) -> tuple[str, int]:
    """Write the ``bundle`` field of a multipart body to ``dest``; return (sha256, size)."""
    boundary = form_boundary(
        content_type,
        content_length,
        limit=max_bytes + _OVERHEAD,
        expected=f"expected multipart/form-data with a {FIELD!r} file field",
        too_large=f"bundle is larger than the limit of {max_bytes} bytes",
    )
    with dest.open("wb") as out:
        sink = _Sink(out, max_bytes)
        await feed_multipart(boundary, sink, stream)
    if not sink.found:
        raise BadRequest(f"the form has no {FIELD!r} file field")
    if sink.size == 0:
        raise BadRequest("the bundle is empty")
    return sink.digest.hexdigest(), sink.size
