"""A tiny real HTTP server that records requests and answers with canned responses per path."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fleet_server.client import render
from fleet_server.client.cli import register


def run_fleet(argv: list[str]) -> int:
    """Parse with only ``fleet`` registered (the other parts are not under test) and run."""
    parser = argparse.ArgumentParser(prog="edgefleet")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Canned:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0


@dataclass
class FakeServer:
    url: str
    routes: dict[tuple[str, str], Canned] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        json_body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        delay: float = 0.0,
    ) -> None:
        body = raw if raw is not None else json.dumps(json_body).encode()
        self.routes[(method, path)] = Canned(status, body, content_type, delay)

    def only_request(self) -> Recorded:
        assert len(self.requests) == 1, [(r.method, r.path) for r in self.requests]
        return self.requests[0]


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # stdlib's name
            return

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.requests.append(
                Recorded(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
            )
            canned = server.routes.get(
                (self.command, parts.path), Canned(404, b'{"detail": "no such route"}')
            )
            time.sleep(canned.delay)
            self.send_response(canned.status)
            self.send_header("Content-Type", canned.content_type)
            self.send_header("Content-Length", str(len(canned.body)))
            self.end_headers()
            self.wfile.write(canned.body)

        do_GET = _answer  # noqa: N815  # http.server dispatches on these names
        do_POST = _answer  # noqa: N815
        do_PUT = _answer  # noqa: N815
        do_PATCH = _answer  # noqa: N815
        do_DELETE = _answer  # noqa: N815

    return Handler


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    fake = FakeServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def fleet(
    fake_server: FakeServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """``fleet(*args, server=..., token=..., tty=True) -> Result``: run ``edgefleet fleet``
    in-process, its stdout a terminal (tables) or, with ``tty=False``, a pipe (plain rows)."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("EDGEFLEET_SERVER", raising=False)
    monkeypatch.delenv("EDGEFLEET_TOKEN", raising=False)

    def run(
        *args: str,
        server: str | None = None,
        token: str | None = "op-token",  # noqa: S107
        tty: bool = True,
    ) -> Result:
        monkeypatch.setattr(render, "stdout_is_terminal", lambda: tty)
        argv = ["fleet", "--server", server or fake_server.url]
        if token is not None:
            argv += ["--token", token]
        code = run_fleet([*argv, *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
