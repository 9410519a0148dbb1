"""TLS for ``mqtts://`` brokers: one verifying client context, and handshake errors in words.

The context always verifies the broker's certificate chain and host name (there is no
"insecure" switch: a device that cannot verify its broker must not send it a token), uses
TLS 1.2 or newer, and presents a client certificate when one is configured. Sockets made from
it record the TLS error that ends a connection attempt, so the transport can say *why* it cannot
connect (wrong CA, a broker that wants a client certificate) instead of only that it cannot.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

from edgefleet.tls_files import MAX_PEM_BYTES, TlsError, TlsFiles, check_pem_file

__all__ = [
    "MAX_PEM_BYTES",
    "RecordingContext",
    "TlsError",
    "TlsFiles",
    "check_pem_file",
    "client_context",
    "explain",
]


class _ErrorBox:
    """The last TLS failure of a connection attempt (set from paho's network thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: OSError | None = None

    def set(self, err: OSError) -> None:
        with self._lock:
            self._error = err

    def peek(self) -> OSError | None:
        with self._lock:
            return self._error

    def take(self) -> OSError | None:
        with self._lock:
            err, self._error = self._error, None
            return err


class RecordingContext(ssl.SSLContext):
    """An SSLContext whose sockets record the TLS error that broke them in ``errors``."""

    errors: _ErrorBox


def client_context(files: TlsFiles) -> RecordingContext:
    """A verifying client context for ``files``; TlsError (one line) if a file is unusable."""
    context = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if files.ca_file is not None:
            context.load_verify_locations(cafile=str(check_pem_file(files.ca_file, "ca_file")))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if files.cert_file is not None and files.key_file is not None:
            cert = check_pem_file(files.cert_file, "cert_file")
            key = check_pem_file(files.key_file, "key_file")
            context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except ssl.SSLError as err:
        raise TlsError(f"TLS files rejected: {err.reason or err}") from err
    except OSError as err:
        raise TlsError(f"TLS files unreadable: {err.strerror or err}") from err
    box = _ErrorBox()
    context.errors = box

    class _Socket(ssl.SSLSocket):
        def do_handshake(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().do_handshake(*args, **kwargs)
            except OSError as err:  # SSLError, or the peer closing mid-handshake
                if not isinstance(err, ssl.SSLWantReadError | ssl.SSLWantWriteError):
                    box.set(err)
                raise

        def recv(self, *args: Any, **kwargs: Any) -> bytes:
            # TLS 1.3: a broker refuses a missing client certificate after the handshake,
            # so the alert arrives on the first read.
            try:
                return super().recv(*args, **kwargs)
            except ssl.SSLError as err:
                if not isinstance(err, ssl.SSLWantReadError | ssl.SSLWantWriteError):
                    box.set(err)
                raise

    context.sslsocket_class = _Socket
    return context


def explain(err: OSError) -> str:
    """One line for a TLS failure, with a hint for the common misconfigurations."""
    if not isinstance(err, ssl.SSLError):
        return (
            f"the connection closed during the TLS handshake ({err.strerror or err}): "
            "is that port a TLS listener?"
        )
    reason = str(err.reason or "") or str(err)
    text = getattr(err, "verify_message", None) or reason
    upper = reason.upper()
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"the broker's certificate was not accepted ({text}): check ca_file and the host"
    if "CERTIFICATE_REQUIRED" in upper or "HANDSHAKE_FAILURE" in upper:
        return f"the broker refused the handshake ({text}): it may require a client certificate"
    if "UNKNOWN_CA" in upper or "BAD_CERTIFICATE" in upper or "CERTIFICATE_UNKNOWN" in upper:
        return f"the broker rejected this client's certificate ({text})"
    if "WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER" in upper:
        return f"no TLS on that port ({text}): is it a plain mqtt:// listener?"
    return text
