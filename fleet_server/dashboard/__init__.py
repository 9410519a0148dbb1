"""``/dashboard``: a read-only fleet view in the browser, served by the fleet server itself.

Three static files (HTML, JS, CSS) shipped in the package: no build step, no CDN, nothing fetched
from anywhere but this server. The page holds no data; it asks for an API token (the viewer role
suffices), keeps it in the tab's ``sessionStorage`` and reads the same JSON API the CLI uses
(``/api/v1/devices``, ``/rollouts``, ``/models``, ``/ingest/stats``). Everything a device or an
operator wrote (ids, errors, tags) is escaped before it is shown, and a strict Content Security
Policy allows scripts and connections to this origin only.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

#: Scripts, styles and API calls from this origin only; no inline script, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


@cache
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_read(name), media_type=FILES[name], headers=SECURITY_HEADERS)


@router.get("/dashboard")
def dashboard() -> Response:
    return _serve("index.html")


@router.get("/dashboard/app.js")
def dashboard_js() -> Response:
    return _serve("app.js")


@router.get("/dashboard/app.css")
def dashboard_css() -> Response:
    return _serve("app.css")
