"""Where a request presents a credential: the throttle check around it.

Every credential check (operator and device bearer tokens in :mod:`fleet_server.api.deps`,
the enrollment token at ``POST /api/v1/enroll``) runs through :func:`guarded`, so a wrong
credential counts against its client address's budget wherever it is presented
(:mod:`fleet_server.services.throttle.policies` says how the budget works and why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request

from fleet_server.runtime import Runtime
from fleet_server.services.auth import hash_token
from fleet_server.services.errors import TooManyRequests, Unauthorized
from fleet_server.services.throttle import client_key

T = TypeVar("T")


def client_of(request: Request) -> str:
    """The throttle's key for the caller (the address uvicorn reports; behind a reverse proxy
    that is X-Forwarded-For from the addresses in uvicorn's ``forwarded_allow_ips``)."""
    return client_key(request.client.host if request.client is not None else None)


def guarded(
    request: Request, runtime: Runtime, *, kind: str, secret: str, check: Callable[[], T]
) -> T:
    """``check()`` of ``secret``, unless the caller's address has spent its failure budget
    (429). ``check`` raises :class:`Unauthorized` for a wrong credential, which is counted;
    other refusals (403, 410, ...) are not guesses and are not."""
    throttle = runtime.throttle
    client = client_of(request)
    digest = hash_token(secret)
    wait = throttle.retry_after(client, digest)
    if wait is not None:
        throttle.refused(kind)
        raise TooManyRequests(
            f"too many wrong credentials from this address; retry in {wait} s",
            retry_after_s=wait,
        )
    try:
        result = check()
    except Unauthorized:
        throttle.failed(client, kind)
        raise
    throttle.succeeded(digest)
    return result
