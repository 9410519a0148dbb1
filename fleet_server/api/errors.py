"""The API's one error answer: ``{"detail": "<one line>"}``, how it leaves, and how routes
declare it in the OpenAPI document.

Every refusal, whatever raised it (a service error, request validation, a Starlette
``HTTPException``, a value the database refuses, the body limit), leaves with the same body,
:class:`ErrorBody`; bad input is never a 5xx. Routes document what they can refuse with
``responses=error_responses(...)``, which gives each status that body and one standard
description, so the published schema says what the server answers. Before this was declared
in one place, schemathesis' response-conformance checks (10 examples per operation and mode,
as admin, viewer and anonymous) found 168 distinct (operation, caller, check, status)
mismatches, 81 without the caller: FastAPI's default 422 schema (``detail`` as a list; ours is
a string) and 400/401/403/404 that no route documented. Now 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet_server.services.errors import ServiceError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """What every refused request gets back (4xx and 503)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"detail": "device 'cam-7' not found"}]},
    )

    detail: str = Field(description="Why the request was refused, in one line (≤ 500 chars).")


#: A route's ``responses=``: status → OpenAPI response object (FastAPI's format).
Responses = dict[int | str, dict[str, Any]]

#: A route with parameters or a JSON body: 400 (a body that is not UTF-8 JSON, or a value the
#: database refuses, e.g. a NUL in text on PostgreSQL) and 422 (does not match the schema).
INPUT_REFUSALS = (400, 422)
#: A route with a JSON body also has the body limit (413, ``api.limits``).
BODY_REFUSALS = (400, 413, 422)

#: The one description of each status; a route may say more with ``why=``.
DESCRIPTIONS: dict[int, str] = {
    400: "Bad input the schema cannot express: a body that is not UTF-8 JSON, or a value the "
    "database refuses.",
    401: "Missing, unknown or revoked token.",
    403: "The token's role is too small; `detail` names the role needed.",
    404: "Not found.",
    409: "Conflicts with the current state.",
    410: "Existed, but can no longer be used.",
    413: "The request body is larger than the limit.",
    415: "The request body has a media type this route does not take.",
    416: "The range lies outside the body (`Content-Range: bytes */<size>`).",
    422: "Invalid parameters or body: `detail` names up to three problems, in one line.",
    429: "Too many failed authentications from this client: wait `Retry-After` seconds.",
    503: "A part of the server is not ready (database, broker, artifact store, rollout "
    "engine); try again later.",
}

#: Headers a refusal always carries (checked by the response-conformance tests).
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with.",
            "required": True,
            "schema": {"type": "string", "const": "Bearer"},
        }
    },
    416: {
        "Content-Range": {
            "description": "`bytes */<size>`: the size of the whole body.",
            "required": True,
            "schema": {"type": "string", "pattern": r"^bytes \*/[0-9]+$"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds until this client may try again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def error_responses(
    *statuses: int | Iterable[int], why: Mapping[int, str] | None = None
) -> Responses:
    """``responses=`` for a route that refuses with ``statuses`` (ints or groups of ints, e.g.
    ``deps.OPERATOR_REFUSALS``), each with :class:`ErrorBody`, the standard description (or
    ``why[status]``) and the headers it always carries.

    Declaring 422 here also replaces FastAPI's default 422 schema, which describes a list of
    errors the server never sends."""
    codes: set[int] = set()
    for item in statuses:
        codes.update((item,) if isinstance(item, int) else item)
    unknown = codes - set(DESCRIPTIONS)
    if unknown:
        raise ValueError(f"no standard description for status {sorted(unknown)}")
    declared: Responses = {}
    for code in sorted(codes):
        response: dict[str, Any] = {
            "model": ErrorBody,
            "description": (why or {}).get(code, DESCRIPTIONS[code]),
        }
        if code in _HEADERS:
            response["headers"] = _HEADERS[code]
        declared[code] = response
    return declared


def _one_line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(
        {"detail": _one_line(str(exc))}, status_code=exc.status_code, headers=exc.headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for item in exc.errors()[:3]:
        loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    return JSONResponse({"detail": _one_line("; ".join(parts) or "invalid request")}, 422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"detail": _one_line(str(exc.detail))},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses outright (PostgreSQL: a NUL in text, a number out of range)
    is bad input, not a server fault."""
    assert isinstance(exc, DataError)
    log.info("database refused a request value", extra={"path": request.url.path[:200]})
    return JSONResponse({"detail": "invalid input: the database refused a value"}, 400)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
