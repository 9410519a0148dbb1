"""Where a request presents a credential: the throttle check around it, and its 429 in the spec.

Every credential check (operator and device bearer tokens in :mod:`fleet_server.api.deps`,
the enrollment token at ``POST /api/v1/enroll``) runs through :func:`guarded`, so a wrong
credential counts against its client address's budget wherever it is presented
(:mod:`fleet_server.services.throttle` says how the budget works and why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request

from fleet_server.runtime import Runtime
from fleet_server.services.auth import hash_token
from fleet_server.services.errors import TooManyRequests, Unauthorized
from fleet_server.services.throttle import client_key

T = TypeVar("T")

#: The OpenAPI response of a refused address (added to every route that takes a credential).
TOO_MANY_ATTEMPTS: dict[str, Any] = {
    "description": "Too many wrong credentials from this client address: retry after "
    "Retry-After seconds (a recently accepted credential is not refused).",
    "headers": {
        "Retry-After": {
            "description": "Seconds until this address may present a credential again.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}},
                "required": ["detail"],
            }
        }
    },
}
_BEARER_SCHEME = "HTTPBearer"


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


def document_throttling(app: FastAPI) -> None:
    """Add the 429 response to every operation that takes a bearer token (the enrollment route
    names it itself), on top of whatever the app's OpenAPI generator produces."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict):
                    continue
                security = operation.get("security") or []
                if any(_BEARER_SCHEME in requirement for requirement in security):
                    operation.setdefault("responses", {}).setdefault("429", TOO_MANY_ATTEMPTS)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
