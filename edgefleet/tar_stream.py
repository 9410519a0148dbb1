"""Reading a bundle's ``.tar.gz`` stream within fixed limits, without :mod:`tarfile`.

Why not ``tarfile``: it reads a PAX extended header, a GNU long name or a GNU sparse map whole
into memory before anyone can look at the member, at whatever size the header declares, and it
recurses once per PAX header. gzip makes that cheap for an attacker (issue #11): 0.5 MB declaring
a 512 MiB PAX header raised a reader's peak RSS by 518 MB (the adversarial run saw 1,031 MB from
1 MB), a 33 kB GNU sparse map by 832 MB in 15 s, and 5,000 PAX headers in a row raised
``RecursionError``. Here every 512-byte header block is checked before a byte of what it
announces is read: metadata (PAX records, GNU long names) is at most :data:`MAX_META_BYTES`, at
most :data:`MAX_META_HEADERS` precede a member, member data counts against a total fixed in
advance, and anything a bundle never needs is refused by its header alone. Memory stays at one
metadata block plus one read chunk, whatever the stream declares.

Read: ustar, POSIX (PAX) and GNU headers of regular files; PAX ``path`` and ``size`` records
(other records are ignored); GNU long names. Refused: links, directories, devices, FIFOs, sparse
files (GNU ``S`` or PAX ``GNU.sparse.*``), global PAX headers, GNU long link names. Standard
library only: the agent unpacks bundles with it too.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 512
#: Largest PAX header or GNU long name read (ours are under 300 bytes; GNU tar's under 4 KiB).
MAX_META_BYTES = 64 * 1024
#: Most metadata headers (PAX, GNU long name) before one member.
MAX_META_HEADERS = 4
_ZERO = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # '7' is a contiguous file: a regular file to every reader
_PAX = b"x"
_LONGNAME = b"L"
_KINDS = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a FIFO",
    b"g": "a global PAX header",
    b"K": "a GNU long link name",
    b"S": "a GNU sparse file",
}


class TarStreamError(Exception):
    """A tar stream that is malformed, truncated, or beyond the reader's limits."""


@dataclass(frozen=True)
class TarMember:
    """A regular file in the stream; its data is read with :meth:`TarStream.read`."""

    name: str
    size: int


class TarStream:
    """The regular files of a gzip-compressed tar stream, one at a time, within limits.

    ``max_members`` bounds the members, ``max_data_bytes`` the sum of their declared sizes
    (refused from the header, before any data is decompressed).
    """

    def __init__(self, fileobj: BinaryIO, *, max_members: int, max_data_bytes: int) -> None:
        self._gz = gzip.GzipFile(fileobj=fileobj, mode="rb")
        self._max_members = max_members
        self._max_data = max_data_bytes
        self._members = 0
        self._data = 0
        self._left = 0  # unread data bytes of the current member
        self._pad = 0  # padding after them
        self._done = False

    def __iter__(self) -> Iterator[TarMember]:
        while not self._done:
            self._skip(self._left + self._pad)
            self._left = self._pad = 0
            member = self._next()
            if member is None:
                self._done = True
                return
            yield member

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current member's data; ``b""`` at its end."""
        want = min(size, self._left)
        if want <= 0:
            return b""
        data = self._exact(want)
        self._left -= want
        return data

    # -- headers ------------------------------------------------------------------------------
    def _next(self) -> TarMember | None:
        name: str | None = None
        size: int | None = None
        for _ in range(MAX_META_HEADERS + 1):
            block = self._exact(BLOCK, eof_ok=True)
            if not block or block == _ZERO:
                if name is not None or size is not None:
                    raise TarStreamError("the stream ends after a PAX header or long name")
                return None  # end of archive (a stream that just stops is accepted, as tar does)
            head = _Header.parse(block)
            if head.typeflag == _PAX:
                records = _pax_records(self._meta(head))
                name = records.get("path", name)
                if "size" in records:
                    size = _pax_size(records["size"])
            elif head.typeflag == _LONGNAME:
                name = _decode(self._meta(head).split(b"\0", 1)[0], "GNU long name")
            elif head.typeflag in _REGULAR:
                return self._start(
                    TarMember(
                        name=head.name if name is None else name,
                        size=head.size if size is None else size,
                    )
                )
            else:
                kind = _KINDS.get(head.typeflag, f"of type {head.typeflag!r}")
                raise TarStreamError(f"member {head.name!r} is {kind}, not a regular file")
        raise TarStreamError(f"more than {MAX_META_HEADERS} PAX headers or long names in a row")

    def _start(self, member: TarMember) -> TarMember:
        size = member.size
        if member.name.endswith("/"):
            raise TarStreamError(f"member {member.name!r} is a directory, not a regular file")
        self._members += 1
        if self._members > self._max_members:
            raise TarStreamError(f"too many members (more than {self._max_members})")
        self._data += size
        if self._data > self._max_data:
            raise TarStreamError(
                f"members declare more than the limit of {self._max_data} bytes "
                f"({member.name!r} alone {size})"
            )
        self._left, self._pad = size, -size % BLOCK
        return member

    def _meta(self, head: _Header) -> bytes:
        """A metadata header's data, refused by its declared size before it is read."""
        if head.size > MAX_META_BYTES:
            raise TarStreamError(
                f"a {'PAX header' if head.typeflag == _PAX else 'GNU long name'} of "
                f"{head.size} bytes (the limit is {MAX_META_BYTES})"
            )
        data = self._exact(head.size)
        self._skip(-head.size % BLOCK)
        return data

    # -- bytes --------------------------------------------------------------------------------
    def _exact(self, size: int, *, eof_ok: bool = False) -> bytes:
        chunks: list[bytes] = []
        got = 0
        while got < size:
            try:
                chunk = self._gz.read(size - got)
            except (OSError, EOFError, zlib.error) as err:
                raise TarStreamError(f"corrupt or truncated gzip stream: {err}") from err
            if not chunk:
                if eof_ok and got == 0:
                    return b""
                raise TarStreamError("the stream ends inside a header or a member")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _skip(self, size: int) -> None:
        while size > 0:
            size -= len(self._exact(min(size, 1024 * 1024)))


@dataclass(frozen=True)
class _Header:
    name: str
    size: int
    typeflag: bytes

    @classmethod
    def parse(cls, block: bytes) -> _Header:
        stored = _octal(block[148:156], "checksum")
        unsigned = 256 + sum(struct.unpack_from("148B8x356B", block))
        signed = 256 + sum(struct.unpack_from("148b8x356b", block))
        if stored not in (unsigned, signed):
            raise TarStreamError("not a tar stream (a header's checksum does not match)")
        name = _decode(block[:100].split(b"\0", 1)[0], "member name")
        if block[257:263] == b"ustar\0":  # POSIX: a name prefix; GNU uses these bytes otherwise
            prefix = _decode(block[345:500].split(b"\0", 1)[0], "member name")
            if prefix:
                name = f"{prefix}/{name}"
        return cls(name=name, size=_size(block[124:136]), typeflag=block[156:157])


def _size(field: bytes) -> int:
    if field[0] == 0o200:  # base-256 (GNU, sizes of 8 GiB and more)
        return int.from_bytes(field[1:], "big")
    if field[0] == 0o377:
        raise TarStreamError("a member declares a negative size")
    return _octal(field, "size")


def _octal(field: bytes, what: str) -> int:
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError as err:
        raise TarStreamError(f"not a tar stream (bad {what} field)") from err


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TarStreamError(f"{what} is not UTF-8") from err


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records (POSIX.1-2008); malformed ones are refused."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos:] == bytes(len(data) - pos):
            break  # NUL padding some writers leave
        space = data.find(b" ", pos, pos + 21)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = data[pos : pos + length]
        if length <= space - pos + 1 or len(record) != length or not record.endswith(b"\n"):
            raise TarStreamError("malformed PAX header record")
        key, eq, value = record[space - pos + 1 : -1].partition(b"=")
        if not eq:
            raise TarStreamError("malformed PAX header record")
        name = _decode(key, "PAX record key")
        if name.startswith("GNU.sparse."):
            raise TarStreamError("sparse files are not supported in a bundle")
        records[name] = _decode(value, f"PAX record {name!r}")
        pos += length
    return records


def _pax_size(value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 20:
        raise TarStreamError(f"PAX size {value[:40]!r} is not a size")
    return int(value)
