"""Failures: server errors, bad URLs, an absent server, malformed, oversized and hostile answers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from fleet_server.client import api
from fleet_server.client.api import FleetClient, FleetClientError, FleetUnreachableError
from tests.utils.net import free_port

if TYPE_CHECKING:
    from tests.fleet_server.client.conftest import FakeServer


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"detail": "device 'x' not found"}, "404: device 'x' not found"),
        (409, {"detail": "digits@1 already exists"}, "409: digits@1 already exists"),
        (422, {"detail": [{"loc": ["body", "id"], "msg": "bad id"}]}, "422: id: bad id"),
        (403, {"detail": ""}, "403: Forbidden"),
        (400, {"no_detail": 1}, "400: Bad Request"),
        (400, ["a", "list"], "400: Bad Request"),
        (503, {"detail": "database\nis\tdown  "}, "503: database is down"),
    ],
)  # fmt: skip
def test_server_errors_are_one_line_with_the_detail(
    fleet: Any, fake_server: FakeServer, status: int, body: Any, expected: str
) -> None:
    fake_server.route("GET", "/api/v1/devices/x", status=status, json_body=body)
    result = fleet("devices", "show", "x")
    assert result.code == 1
    assert result.err == f"edgefleet fleet: {expected}\n"
    assert result.out == ""


def test_non_json_error_page(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "GET",
        "/api/v1/models",
        status=502,
        raw=b"<html>Bad gateway</html>",
        content_type="text/html",
    )
    result = fleet("models", "list")
    assert (result.code, result.err) == (1, "edgefleet fleet: 502: Bad Gateway\n")


@pytest.mark.parametrize(
    ("raw", "content_type", "message"),
    [
        (b"<html>ok</html>", "text/html", "expected JSON from the server, got text/html"),
        (b"", "application/json", "expected JSON from the server"),
        (b'{"truncated": ', "application/json", "expected JSON from the server"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "expected JSON from the server"),
        (b'{"an": "object"}', "application/json", "expected a JSON list of objects"),
        (b"[1, 2, 3]", "application/json", "expected a JSON list of objects"),
        (b"null", "application/json", "expected JSON from the server"),
    ],
)
def test_malformed_success_responses(
    fleet: Any, fake_server: FakeServer, raw: bytes, content_type: str, message: str
) -> None:
    fake_server.route("GET", "/api/v1/devices", raw=raw, content_type=content_type)
    result = fleet("devices", "list")
    assert result.code == 1
    assert message in result.err and result.err.count("\n") == 1
    assert result.out == ""


def test_oversized_response_is_refused(
    fleet: Any, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "MAX_RESPONSE_BYTES", 64 * 1024)
    fake_server.route("GET", "/api/v1/devices", json_body=[DEVICE_STUB] * 2000)
    result = fleet("devices", "list")
    assert result.code == 1
    assert "larger than" in result.err


DEVICE_STUB = {"device_id": "d", "tags": [], "online": False}


def test_hostile_strings_are_shown_literally_and_escapes_removed(
    fleet: Any, fake_server: FakeServer
) -> None:
    evil = {
        **DEVICE_STUB,
        "device_id": "[bold red]pwned[/]",
        "last_error": "\x1b]0;title\x07\x1b[2Jwiped\nsecond line",
        "tags": ["[link=http://evil]x[/link]"],
        "phase": "x" * 5000,
    }
    fake_server.route("GET", "/api/v1/devices", json_body=[evil])
    fake_server.route(
        "GET",
        "/api/v1/devices/x",
        status=400,
        json_body={"detail": "\x1b[31mred\x1b[0m\r\nfake: line"},
    )
    result = fleet("devices", "list")
    assert result.code == 0
    assert "\x1b" not in result.out and "\x07" not in result.out
    assert "[bold red]pwned[/]" in result.out
    assert "[link=http://evil]x[/link]" in result.out
    assert "x" * 200 not in result.out.replace("\n", "").replace(" ", "").replace("│", "")
    error = fleet("devices", "show", "x")
    assert "\x1b" not in error.err and error.err.count("\n") == 1


def test_many_devices(fleet: Any, fake_server: FakeServer) -> None:
    rows = [{**DEVICE_STUB, "device_id": f"pi-{i:04d}"} for i in range(500)]
    fake_server.route("GET", "/api/v1/devices", json_body=rows)
    result = fleet("devices", "list")
    assert result.code == 0
    assert "devices (500)" in result.out and "pi-0499" in result.out


def test_server_down_exits_2_naming_the_url(fleet: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = fleet("devices", "list", server=url)
    assert result.code == 2
    assert result.err.startswith(f"edgefleet fleet: cannot reach the fleet server at {url}")
    assert result.err.count("\n") == 1


@pytest.mark.parametrize(
    "url",
    ["nope", "ftp://127.0.0.1", "http://", "http://127.0.0.1:99999", "http://u:p@127.0.0.1",
     "http://127.0.0.1/?q=1", "http://[::1"],
)  # fmt: skip
def test_bad_server_urls_exit_2(fleet: Any, fake_server: FakeServer, url: str) -> None:
    result = fleet("devices", "list", server=url)
    assert result.code == 2
    assert "server URL" in result.err and result.err.count("\n") == 1
    assert fake_server.requests == []


def test_unresolvable_host_exits_2(fleet: Any) -> None:
    result = fleet("models", "list", server="http://no-such-host.invalid:8080")
    assert result.code == 2
    assert "http://no-such-host.invalid:8080" in result.err


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            sock.settimeout(0.1)
            while not stop.is_set():
                try:
                    held.append(sock.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield sock.getsockname()[1]
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()


def test_a_server_that_never_answers_times_out(silent_port: int) -> None:
    with (
        FleetClient(f"http://127.0.0.1:{silent_port}", "t", timeout=0.3) as client,
        pytest.raises(FleetUnreachableError, match="timed out"),
    ):
        client.list_devices()


def test_client_error_carries_status_and_detail(fake_server: FakeServer) -> None:
    fake_server.route("GET", "/api/v1/ingest/stats", status=401, json_body={"detail": "bad token"})
    with FleetClient(fake_server.url, "t") as client, pytest.raises(FleetClientError) as info:
        client.ingest_stats()
    assert (info.value.status, info.value.detail) == (401, "bad token")
    assert not isinstance(info.value, FleetUnreachableError)


def test_json_output_escapes_control_characters(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "GET", "/api/v1/devices", json_body=[{**DEVICE_STUB, "last_error": "\x1b[2J"}]
    )
    result = fleet("devices", "list", "--json")
    assert "\x1b" not in result.out
    assert json.loads(result.out)[0]["last_error"] == "\x1b[2J"
