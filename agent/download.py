"""Fetching a bundle over HTTP(S) with the device token, bounded and hashed while streaming."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from agent.errors import UpdateError

CHUNK = 256 * 1024
Progress = Callable[[int], None]


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
    """Stream ``url`` into ``dest`` (via ``dest.part``); check size and SHA-256.

    ``token`` (if any) is sent as ``Authorization: Bearer``.

    Anything else than exactly ``size`` bytes hashing to ``sha256`` raises UpdateError and
    leaves no file behind.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise UpdateError(f"refusing to download from a non-HTTP URL: {url[:100]!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310  (scheme checked above)
    try:
        _stream(request, part, size=size, sha256=sha256, timeout=timeout, on_progress=on_progress)
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _stream(
    request: urllib.request.Request,
    part: Path,
    *,
    size: int,
    sha256: str,
    timeout: float,
    on_progress: Progress | None,
) -> None:
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as out:  # noqa: S310  (scheme checked by download)
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != size:
                raise UpdateError(f"server announces {length} bytes; expected {size}")
            while chunk := response.read(min(CHUNK, size + 1 - received)):
                received += len(chunk)
                if received > size:
                    raise UpdateError(f"bundle is larger than the expected {size} bytes")
                digest.update(chunk)
                out.write(chunk)
                if on_progress is not None:
                    on_progress(received)
    except urllib.error.HTTPError as err:
        raise UpdateError(f"download failed: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise UpdateError(f"download failed: {err.reason}") from err
    except (OSError, ValueError) as err:
        raise UpdateError(f"download failed: {err}") from err
    if received != size:
        raise UpdateError(f"bundle truncated: {received} of {size} bytes")
    if digest.hexdigest() != sha256:
        raise UpdateError("bundle sha256 does not match the desired state")
