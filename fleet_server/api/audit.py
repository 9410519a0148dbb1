"""The audit middleware: every mutating API call (POST, PUT, PATCH, DELETE under /api/) leaves
one ``audit_log`` row, refused ones (401, 403, 413, 422, ...) included; refusals of callers no
one identified are counted into one row per source, route, status and window
(:mod:`fleet_server.services.audit`).

It sits outside the routers, so a router added later is covered without edits. The auth
dependencies name the caller in the request's :class:`AuditEntry` (``deps.AUDIT_SCOPE_KEY``);
a route may add a target and a little detail with :func:`fleet_server.api.deps.note_target`.
Request bodies are never copied into the log; query parameters are, with secret-named ones
redacted.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet_server.api.deps import AUDIT_SCOPE_KEY
from fleet_server.runtime import Runtime
from fleet_server.services.audit import AuditEntry, record
from fleet_server.services.throttle import client_key
from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_PREFIX = "/api/"


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in MUTATING
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        entry = AuditEntry()
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            entry.detail["query"] = dict(parse_qsl(query, keep_blank_values=True)[:20])
        scope[AUDIT_SCOPE_KEY] = entry
        status = 500  # what the client gets when the app raises without answering

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await self._record(scope, entry, status)

    async def _record(self, scope: Scope, entry: AuditEntry, status: int) -> None:
        app = scope.get("app")
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        engine = runtime.engine if isinstance(runtime, Runtime) else None
        if engine is None:
            log.warning(
                "audit row not written: the database is not connected",
                extra={"method": scope["method"], "path": scope["path"], "status": status},
            )
            return
        template = route_template(scope)
        settings = getattr(getattr(app, "state", None), "settings", None)
        window_s = (
            settings.audit_aggregate_window_s if isinstance(settings, ServerSettings) else 3600
        )
        client = scope.get("client")
        source = client_key(client[0] if client else None)
        try:
            await run_in_threadpool(
                lambda: record(
                    engine=engine,
                    entry=entry,
                    method=scope["method"],
                    path=scope["path"],
                    route=template,
                    status_code=status,
                    source=source,
                    window_s=window_s,
                )
            )
        except Exception:  # noqa: BLE001 - the response is already sent; say so loudly
            log.exception(
                "audit row not written",
                extra={"method": scope["method"], "path": scope["path"], "status": status},
            )


def route_template(scope: Scope) -> str | None:
    """The matched route's full path template (``/api/v1/devices/{device_id}/pin``), or None
    when no route matched. FastAPI >= 0.16x keeps included routers nested and puts the full
    template in its effective route context; older ones flatten routes with the full path."""
    fastapi_scope = scope.get("fastapi")
    context = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    for candidate in (context, scope.get("route")):
        template = getattr(candidate, "path_format", None)
        if isinstance(template, str) and template.startswith(API_PREFIX):
            return template
    return None
