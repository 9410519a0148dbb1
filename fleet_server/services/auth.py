"""Bearer tokens: the operator's (settings or a generated file) and per-device ones (hashed)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)

TOKEN_FILE = "operator_token"  # noqa: S105 - a file name, not a secret


def new_token() -> str:
    """32 random bytes, URL-safe; never starting with '-', which a command line would take for
    an option (``edgefleet agent enroll --enrollment-token -x...``)."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def hash_token(token: str) -> str:
    """Tokens are 32 random bytes, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def resolve_operator_token(*, settings: ServerSettings) -> str:
    """The configured operator token, or the one in ``<data_dir>/operator_token`` (created once,
    mode 0600)."""
    if settings.operator_token is not None:
        return settings.operator_token.get_secret_value()
    return secret_file(settings.data_dir / TOKEN_FILE, what="the operator token")


def secret_file(path: Path, *, what: str) -> str:
    """The secret in ``path``, generated (mode 0600, never overwritten) when it does not exist."""
    if path.exists():
        token = path.read_text().strip()
        if len(token) >= 16:
            return token
        raise ValueError(f"{path} holds no usable token; delete it to generate a new one")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.warning(f"generated {what}", extra={"secret_file": str(path.resolve())})
    return token
