"""Every error leaves as ``{"detail": "<one line>"}``; bad input is never a 5xx."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet_server.services.errors import ServiceError

log = logging.getLogger(__name__)


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
