"""Fetching a bundle over HTTP(S) with the device token: bounded, resumable, hashed.

The bytes go to ``<dest>.part``. A ``.part`` left by an interrupted download (a lost
connection, a crash, a restart) is resumed with ``Range: bytes=<have>-``: only a ``206`` whose
``Content-Range`` starts exactly there and names the expected total is appended to; a ``200``
(a server without range support) restarts the file from zero. The part never grows past the
expected size, and the SHA-256 is computed over the whole file once it is complete.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from agent.errors import UpdateError

CHUNK = 256 * 1024
Progress = Callable[[int], None]
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class _Corrupt(UpdateError):
    """The bytes are wrong (too many, bad hash): the part is deleted, not resumed."""


def download(
    *,
    url: str,
    token: str | None,
    dest: Path,
    size: int,
    sha256: str,
    timeout: float = 30.0,
    on_progress: Progress | None = None,
) -> Path:
    """Fetch ``url`` into ``dest``, resuming ``dest.part``; check size and SHA-256. A ``dest``
    already there with the right size and hash (downloaded before a crash) is used as it is.

    ``token`` (if any) is sent as ``Authorization: Bearer``. Raises UpdateError. A transfer
    cut short keeps its ``.part`` for the next attempt; wrong bytes (too many, a hash that does
    not match) delete it.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise UpdateError(f"refusing to download from a non-HTTP URL: {url[:100]!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # finished before a crash or restart: reuse it if it is still right
        try:
            if dest.stat().st_size == size:
                _verify(dest, sha256)
                return dest
        except _Corrupt:
            pass
        dest.unlink(missing_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    try:
        if have < size:
            _fetch(url, token, part, have=have, size=size, timeout=timeout, progress=on_progress)
        _verify(part, sha256)
        os.replace(part, dest)
    except _Corrupt:
        part.unlink(missing_ok=True)
        raise
    return dest


def _fetch(
    url: str,
    token: str | None,
    part: Path,
    *,
    have: int,
    size: int,
    timeout: float,
    progress: Progress | None,
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310  (scheme checked)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            if have and not _resumes(response.status, response.headers, have, size):
                have = 0  # a full body (200), or a range we did not ask for: start over
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != size - have:
                raise _Corrupt(f"server announces {length} bytes; expected {size - have}")
            # Unbuffered: every chunk received is in the file at once, so even a killed
            # process leaves a part that resumes where the transfer stopped.
            with part.open("r+b" if have else "wb", buffering=0) as out:
                out.seek(have)
                out.truncate()
                received = _copy(response, out, have=have, size=size, progress=progress)
    except urllib.error.HTTPError as err:
        raise UpdateError(f"download failed: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise UpdateError(f"download failed: {err.reason}") from err
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise UpdateError(f"download failed: {err!r}"[:300]) from err
    if received != size:
        raise UpdateError(f"bundle truncated: {received} of {size} bytes (kept to resume)")


def _resumes(status: int, headers: object, have: int, size: int) -> bool:
    if status != 206:
        return False
    value = getattr(headers, "get", lambda _k: None)("Content-Range") or ""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise _Corrupt(f"206 without a usable Content-Range: {value[:80]!r}")
    first, last, total = (int(g) for g in match.groups())
    if (first, last, total) != (have, size - 1, size):
        raise _Corrupt(f"server sent range {value[:80]!r}; asked for bytes {have}-{size - 1}")
    return True


def _copy(
    response: http.client.HTTPResponse,
    out: io.FileIO,
    *,
    have: int,
    size: int,
    progress: Progress | None,
) -> int:
    received = have
    # read1: whatever has arrived (up to a chunk), not a full chunk, so a stalled transfer
    # has still written what it got.
    while chunk := response.read1(min(CHUNK, size + 1 - received)):
        received += len(chunk)
        if received > size:
            raise _Corrupt(f"bundle is larger than the expected {size} bytes")
        view = memoryview(chunk)
        while view:
            view = view[out.write(view) or 0 :]
        if progress is not None:
            progress(received)
    os.fsync(out.fileno())
    return received


def _verify(part: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    with part.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise _Corrupt("bundle sha256 does not match the desired state")
