"""Reading a sample upload: multipart part ``meta`` (SampleMeta JSON, kept in memory, bounded)
and part ``file`` (the content, streamed to a file with its sha256, size limit enforced as the
bytes arrive). The parts' own Content-Type headers are ignored: the content is sniffed."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import parse_options_header

from fleet_server.api.upload import feed_multipart, form_boundary
from fleet_server.services.errors import BadRequest, TooLarge
from fleet_server.services.samples import MAX_META_BYTES

META, FILE = "meta", "file"
#: Room for multipart boundaries and part headers on top of meta and content.
_OVERHEAD = 64 * 1024
#: Bytes of the content kept for sniffing its type.
HEAD_BYTES = 16


@dataclass
class Received:
    meta: bytes
    sha256: str
    size: int
    head: bytes


class _Sink:
    def __init__(self, out: BinaryIO, max_bytes: int) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.meta = bytearray()
        self.seen: set[str] = set()
        self._part: str | None = None
        self._name = b""
        self._value = b""
        self._disposition = b""

    def on_part_begin(self) -> None:
        self._part = None
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = self._value
        self._name = b""
        self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("latin-1")
        if name not in (META, FILE):
            raise BadRequest(f"unexpected form field {name[:40]!r}: only 'meta' and 'file'")
        if name in self.seen:
            raise BadRequest(f"the form has more than one {name!r} field")
        self.seen.add(name)
        self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part == META:
            self.meta += chunk
            if len(self.meta) > MAX_META_BYTES:
                raise TooLarge(f"the meta part is larger than {MAX_META_BYTES} bytes")
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"sample is larger than the limit of {self.max_bytes} bytes")
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self.digest.update(chunk)
        self.out.write(chunk)

    def on_part_end(self) -> None:
        self._part = None


async def receive_sample(
    *,
    content_type: str | None,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    dest: Path,
    max_bytes: int,
) -> Received:
    """Parse the form; raise a ServiceError (413, 415, 400) for a body that cannot be one."""
    boundary = form_boundary(
        content_type,
        content_length,
        limit=max_bytes + MAX_META_BYTES + _OVERHEAD,
        expected="expected multipart/form-data with parts 'meta' and 'file'",
        too_large=f"sample is larger than the limit of {max_bytes} bytes",
    )
    with dest.open("wb") as out:
        sink = _Sink(out, max_bytes)
        await feed_multipart(boundary, sink, stream)
    missing = [p for p in (META, FILE) if p not in sink.seen]
    if missing:
        raise BadRequest(f"the form has no {' or '.join(repr(m) for m in missing)} part")
    if sink.size == 0:
        raise BadRequest("the sample file is empty")
    return Received(
        meta=bytes(sink.meta), sha256=sink.digest.hexdigest(), size=sink.size, head=sink.head
    )
