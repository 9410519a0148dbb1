"""The TLS files of an ``mqtts://`` broker, checked without importing ``ssl``.

:mod:`edgefleet.mqtt_tls` builds the context from them; the agent's config and the transport
import only this module until a TLS connection is made, so an agent on ``mqtt://`` never
imports ``ssl`` (agent.deferred, docs/memory.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: A certificate, key or CA file larger than this is refused unread (a chain is a few KiB).
MAX_PEM_BYTES = 1024 * 1024


class TlsError(ValueError):
    """A TLS file is missing, unreadable or not what it should be (one line)."""


@dataclass(frozen=True)
class TlsFiles:
    """``ca_file``: the CA bundle that signed the broker (None: the system's trust store);
    ``cert_file``/``key_file``: this client's certificate and private key (PEM), both or none."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise TlsError("a client certificate needs both cert_file and key_file")


def check_pem_file(path: str | Path, what: str) -> Path:
    """``path`` as a readable, bounded PEM file, or TlsError naming ``what``."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(MAX_PEM_BYTES + 1)
    except OSError as err:
        raise TlsError(f"{what} {p}: cannot read: {err.strerror or err}") from err
    if len(head) > MAX_PEM_BYTES:
        raise TlsError(f"{what} {p}: larger than {MAX_PEM_BYTES} bytes")
    if b"-----BEGIN " not in head:
        raise TlsError(f"{what} {p}: not a PEM file")
    return p
