"""``/dashboard``: the operator console in the browser, served by the fleet server itself.

Static files shipped in the package (HTML, CSS and four small ES modules: ``fmt`` escaping and
formatting, ``charts`` SVG drawn by our own code, ``views`` pure render functions, ``app`` the
wiring): no build step, no CDN, no chart library, nothing fetched from anywhere but this server.
The page holds no data; it asks for an API token, keeps it in the tab's ``sessionStorage`` and
reads the same JSON API the CLI uses. A viewer token sees the fleet, device, model and rollout
views; an operator token also gets the actions (the server checks every call and audits it as
any other). Everything a device or an operator wrote is escaped before it is shown, and a strict
Content Security Policy allows scripts, styles and connections to this origin only.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
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

_JS = "text/javascript; charset=utf-8"
#: Every file served, by name; anything else under /dashboard/ is a 404.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.mjs": _JS,
    "fmt.mjs": _JS,
    "charts.mjs": _JS,
    "views.mjs": _JS,
}


@cache
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_read(name), media_type=FILES[name], headers=SECURITY_HEADERS)


@router.get("/dashboard")
def dashboard() -> Response:
    return _serve("index.html")


@router.get("/dashboard/{name}")
def dashboard_file(name: str) -> Response:
    if name not in FILES or name == "index.html":
        raise HTTPException(status_code=404, detail="not found")
    return _serve(name)
