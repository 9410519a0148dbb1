"""Small uploads that unpack into something huge: the bundles an attacker sends to make a tar
reader allocate (issue #11, finding 6).

Each is well under 1 MB on the wire. The bulk is built from one compressed block repeated as
concatenated gzip members (which every gzip reader decodes as one stream), so building a bundle
that declares 512 MiB costs the test a few milliseconds and no memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

BLOCK = 512
MIB = 1024 * 1024
_PIECE = 16 * MIB


def header(name: str, size: int, typeflag: bytes, *, extended: bool = False) -> bytes:
    """One ustar header block with a valid checksum (``extended``: the old GNU sparse flag)."""
    block = bytearray(BLOCK)
    block[0 : len(name)] = name.encode()
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    if size < 8**11:
        block[124:136] = b"%011o\0" % size
    else:  # base-256, as GNU tar writes sizes of 8 GiB and more
        block[124:136] = b"\x80" + size.to_bytes(11, "big")
    block[136:148] = b"00000000000\0"
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    if extended:
        block[482] = 1  # isextended: extension blocks follow
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def _repeat(piece: bytes, total: int) -> bytes:
    """``total`` bytes (a multiple of ``len(piece)``) of ``piece`` repeated, gzip-compressed."""
    assert total % len(piece) == 0
    per = max(1, _PIECE // len(piece))
    member = gzip.compress(piece * per, compresslevel=9, mtime=0)
    count, rest = divmod(total, len(piece) * per)
    tail = gzip.compress(piece * (rest // len(piece)), mtime=0) if rest else b""
    return member * count + tail


def _bundle(head: bytes, bulk: bytes, tail: bytes = b"") -> bytes:
    return gzip.compress(head, mtime=0) + bulk + gzip.compress(tail + b"\0" * (2 * BLOCK), mtime=0)


def pax_header_bomb(declared: int = 512 * MIB) -> bytes:
    """A PAX extended header declaring ``declared`` bytes: tarfile reads them all at once."""
    return _bundle(header("././@PaxHeader", declared, b"x"), _repeat(b"\0" * BLOCK, declared))


def gnu_longname_bomb(declared: int = 512 * MIB) -> bytes:
    """A GNU long-name header declaring ``declared`` bytes of name: read whole, too."""
    return _bundle(header("././@LongLink", declared, b"L"), _repeat(b"a" * BLOCK, declared))


def gnu_sparse_map_bomb(entries: int = 16 * MIB) -> bytes:
    """A PAX GNU sparse 1.0 member whose map lists ``entries`` numbers: tarfile holds them all
    as a Python list of ints before anyone sees the member."""
    records = b"".join(
        pax_record(key, value)
        for key, value in (
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "model.onnx"),
            ("GNU.sparse.realsize", "1"),
        )
    )
    head = header("././@PaxHeader", len(records), b"x") + _pad(records)
    body = 2 * entries + BLOCK
    head += header("GNUSparseFile.0/model.onnx", body, b"0")
    first = b"%d\n" % (entries // 2)
    first += b"0\n" * ((BLOCK - len(first)) // 2)
    first = first.ljust(BLOCK, b"\n")
    return _bundle(head + first, _repeat(b"0\n" * (BLOCK // 2), 2 * entries))


def old_gnu_sparse_bomb(blocks: int = 256 * 1024) -> bytes:
    """An old-style GNU sparse member ('S') followed by ``blocks`` extension blocks of 21
    (offset, size) pairs each: tarfile collects every pair before returning the member."""
    ext = bytearray(BLOCK)
    for i in range(21):
        ext[i * 24 : i * 24 + 12] = b"%011o\0" % (i + 1)
        ext[i * 24 + 12 : i * 24 + 24] = b"%011o\0" % 1
    ext[504] = 1
    return _bundle(
        header("model.onnx", 0, b"S", extended=True), _repeat(bytes(ext), blocks * BLOCK)
    )


def huge_member(declared: int = 2048 * MIB) -> bytes:
    """A regular member declaring ``declared`` bytes of zeros: a CPU and disk bomb for a reader
    that decompresses before checking the size."""
    return _bundle(header("model.onnx", declared, b"0"), _repeat(b"\0" * BLOCK, declared))


def nested_pax_headers(count: int = 5000) -> bytes:
    """``count`` PAX headers in a row: tarfile recurses once per header (RecursionError)."""
    record = pax_record("comment", "x")
    one = header("././@PaxHeader", len(record), b"x") + _pad(record)
    return _bundle(b"", _repeat(one, count * len(one)))


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


#: Name → builder, for parametrised tests.
HOSTILE: dict[str, Callable[[], bytes]] = {
    "pax-header-512MiB": pax_header_bomb,
    "gnu-longname-512MiB": gnu_longname_bomb,
    "gnu-sparse-map-16M-entries": gnu_sparse_map_bomb,
    "old-gnu-sparse-5M-pairs": old_gnu_sparse_bomb,
    "member-2GiB-of-zeros": huge_member,
    "5000-nested-pax-headers": nested_pax_headers,
}
