"""The streaming multipart reader behind POST /api/v1/models."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleet_server.api.upload import receive_bundle
from fleet_server.services.errors import BadRequest, TooLarge, UnsupportedMediaType

CTYPE = "multipart/form-data; boundary=b0undary"


def _part(name: str, data: bytes, filename: str | None = "x.tar.gz") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--b0undary\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--b0undary--\r\n"


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _receive(tmp_path: Path, body: bytes, headers: dict[str, str] | None = None) -> tuple[str, int]:
    headers = headers or {}
    return asyncio.run(
        receive_bundle(
            content_type=headers.get("content_type", CTYPE),
            content_length=headers.get("content_length"),
            stream=_chunks(body),
            dest=tmp_path / "out.bin",
            max_bytes=10_000,
        )
    )


def test_reads_the_bundle_field_in_small_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    body = _body(_part("note", b"hello", filename=None), _part("bundle", data))
    sha, size = _receive(tmp_path, body)
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert (tmp_path / "out.bin").read_bytes() == data


@pytest.mark.parametrize(
    ("body", "kwargs", "error", "match"),
    [
        (_body(_part("bundle", b"a"), _part("bundle", b"b")), {}, BadRequest, "more than one"),
        (_body(_part("other", b"a")), {}, BadRequest, "no 'bundle'"),
        (_body(_part("bundle", b"")), {}, BadRequest, "empty"),
        (_body(_part("note", b"n" * 70_000, None)), {}, BadRequest, "too large"),
        (_body(_part("bundle", b"z" * 10_001)), {}, TooLarge, "limit"),
        (b"garbage", {"content_type": "application/json"}, UnsupportedMediaType, "multipart"),
        (b"garbage", {"content_type": "multipart/form-data"}, UnsupportedMediaType, "multipart"),
        (b"x", {"content_length": "999999999"}, TooLarge, "limit"),
        (b"x", {"content_length": "abc"}, BadRequest, "Content-Length"),
        (b"--b0undary\r\nno headers end", {}, BadRequest, "."),
    ],
)
def test_refusals(
    tmp_path: Path, body: bytes, kwargs: dict[str, str], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _receive(tmp_path, body, kwargs)
