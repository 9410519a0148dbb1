"""Fetching a bundle over HTTP(S) with the device token: bounded, resumable, hashed.

The bytes go to ``<dest>.part``. A ``.part`` left by an interrupted download (a lost
connection, a crash, a restart) is resumed with ``Range: bytes=<have>-`` and, when the first
response named a strong ``ETag`` (or a ``Last-Modified``), ``If-Range`` with it (kept beside
the part in ``<dest>.part.validator``): only a ``206`` whose ``Content-Range`` starts exactly
there and names the expected total is appended to; a ``200`` (content changed on the server,
or no range support) restarts the file from zero. The part never grows past the expected size,
and the SHA-256 is computed over the whole file once it is complete.

Transient failures (connection lost, refused or timed out, a truncated body, HTTP 408/429/5xx)
are retried, resuming, with a capped exponential back-off for ``RetryPolicy.window_s``; wrong
bytes and other HTTP errors fail at once. Counted through ``count(kind, n)``: ``bytes`` received,
``refetched_bytes`` received a second time (at offsets already fetched once, in this process
or before a restart), ``retries``, ``resumes`` (a 206 continuing a part) and ``restarts`` (a
part thrown away and fetched again from byte 0).
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.errors import UpdateError
from edgefleet import digest

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
Progress = Callable[[int], None]
Count = Callable[[str, int], None]
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
#: Longest ETag / Last-Modified kept as the part's validator; a longer one is not used.
MAX_VALIDATOR = 200
VALIDATOR_SUFFIX = ".validator"
#: Statuses worth another attempt: the server is restarting, overloaded or timed out.
_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long a download keeps retrying transient failures (0: one attempt only)."""

    window_s: float = 0.0
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0


class _Corrupt(UpdateError):
    """The bytes are wrong (too many, bad hash): the part is deleted, not resumed."""


class _Final(UpdateError):
    """Retrying will not help (HTTP 401/403/404, ...): the part is kept for a later update."""


class _Tally:
    """Counts for one download; ``high`` is the furthest offset already fetched once."""

    def __init__(self, count: Count | None, high: int) -> None:
        self._count = count
        self.high = high

    def add(self, kind: str, n: int = 1) -> None:
        if self._count is not None and n:
            self._count(kind, n)

    def received(self, offset: int, n: int) -> None:
        self.add("bytes", n)
        self.add("refetched_bytes", max(0, min(offset + n, self.high) - offset))
        self.high = max(self.high, offset + n)


def part_files(dest: Path) -> tuple[Path, Path]:
    """The part and its validator for ``dest``: what a caller clearing old downloads keeps."""
    part = dest.with_name(dest.name + ".part")
    return part, part.with_name(part.name + VALIDATOR_SUFFIX)


def download(
    *,
    url: str,
    token: str | None,
    dest: Path,
    size: int,
    sha256: str,
    timeout: float = 30.0,
    on_progress: Progress | None = None,
    count: Count | None = None,
    retry: RetryPolicy | None = None,
    stop: threading.Event | None = None,
) -> Path:
    """Fetch ``url`` into ``dest``, resuming ``dest.part``; check size and SHA-256. A ``dest``
    already there with the right size and hash (downloaded before a crash) is used as it is.

    ``token`` (if any) is sent as ``Authorization: Bearer``. Raises UpdateError. A transfer
    cut short keeps its ``.part`` for the next attempt; wrong bytes (too many, a hash that does
    not match) delete it. ``stop`` ends the retries early (the part is kept).
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
    part, validator = part_files(dest)
    have = part.stat().st_size if part.exists() else 0
    tally = _Tally(count, high=min(have, size))
    if have > size:
        _drop(part, validator)
        tally.add("restarts")
        have = 0
    policy = retry or RetryPolicy()
    deadline = time.monotonic() + policy.window_s
    delay = policy.first_delay_s
    attempt = 0
    while True:
        try:
            have = part.stat().st_size if part.exists() else 0
            if have < size:
                _fetch(
                    url,
                    token,
                    part,
                    validator,
                    have=have,
                    size=size,
                    timeout=timeout,
                    progress=on_progress,
                    tally=tally,
                )
            _verify(part, sha256)
            os.replace(part, dest)
            validator.unlink(missing_ok=True)
            return dest
        except _Corrupt:
            _drop(part, validator)
            raise
        except _Final:
            raise
        except UpdateError as err:
            attempt += 1
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                raise
            wait = min(delay, left)
            log.warning(
                "download interrupted; resuming",
                extra={"error": str(err), "attempt": attempt, "retry_in_s": round(wait, 2)},
            )
            tally.add("retries")
            if stop is not None and stop.wait(wait):
                raise UpdateError(f"{err} (stopping; kept to resume)") from err
            if stop is None:
                time.sleep(wait)
            delay = min(delay * 2, policy.max_delay_s)


def _drop(part: Path, validator: Path) -> None:
    part.unlink(missing_ok=True)
    validator.unlink(missing_ok=True)


def _fetch(
    url: str,
    token: str | None,
    part: Path,
    validator: Path,
    *,
    have: int,
    size: int,
    timeout: float,
    progress: Progress | None,
    tally: _Tally,
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if have:
        headers["Range"] = f"bytes={have}-"
        kept = _read_validator(validator)
        if kept is not None:
            headers["If-Range"] = kept
    request = urllib.request.Request(url, headers=headers)  # noqa: S310  (scheme checked)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            if have and _resumes(response.status, response.headers, have, size):
                tally.add("resumes")
            elif have:
                have = 0  # a full body (200: changed, or no Range support): start over
                tally.add("restarts")
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != size - have:
                raise _Corrupt(f"server announces {length} bytes; expected {size - have}")
            if not have:
                _write_validator(validator, response.headers)
            # Unbuffered: every chunk received is in the file at once, so even a killed
            # process leaves a part that resumes where the transfer stopped.
            with part.open("r+b" if have else "wb", buffering=0) as out:
                out.seek(have)
                out.truncate()
                received = _copy(
                    response, out, have=have, size=size, progress=progress, tally=tally
                )
    except urllib.error.HTTPError as err:
        kind = UpdateError if err.code in _TRANSIENT_HTTP else _Final
        raise kind(f"download failed: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise UpdateError(f"download failed: {err.reason}") from err
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise UpdateError(f"download failed: {err!r}"[:300]) from err
    if received != size:
        raise UpdateError(f"bundle truncated: {received} of {size} bytes (kept to resume)")


def _read_validator(path: Path) -> str | None:
    try:
        text = path.read_bytes()[: MAX_VALIDATOR + 1].decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    text = text.strip()
    if not text or len(text) > MAX_VALIDATOR or not text.isprintable():
        return None
    return text


def _write_validator(path: Path, headers: object) -> None:
    """Keep the strong ETag (or else Last-Modified) of a body started from byte 0."""
    get = getattr(headers, "get", lambda _k: None)
    etag = (get("ETag") or "").strip()
    value = etag if etag and not etag.startswith("W/") else (get("Last-Modified") or "").strip()
    try:
        if value and len(value) <= MAX_VALIDATOR and value.isascii() and value.isprintable():
            path.write_text(value + "\n", encoding="ascii")
        else:
            path.unlink(missing_ok=True)  # never resume against the old body's validator
    except OSError as err:
        log.warning("cannot keep the download validator", extra={"error": str(err)})


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
    tally: _Tally,
) -> int:
    received = have
    # read1: whatever has arrived (up to a chunk), not a full chunk, so a stalled transfer
    # has still written what it got.
    while chunk := response.read1(min(CHUNK, size + 1 - received)):
        received += len(chunk)
        if received > size:
            raise _Corrupt(f"bundle is larger than the expected {size} bytes")
        tally.received(received - len(chunk), len(chunk))
        view = memoryview(chunk)
        while view:
            view = view[out.write(view) or 0 :]
        if progress is not None:
            progress(received)
    os.fsync(out.fileno())
    return received


def _verify(part: Path, sha256: str) -> None:
    hashed = digest.sha256()
    with part.open("rb") as fh:
        while block := fh.read(CHUNK):
            hashed.update(block)
    if hashed.hexdigest() != sha256:
        raise _Corrupt("bundle sha256 does not match the desired state")
