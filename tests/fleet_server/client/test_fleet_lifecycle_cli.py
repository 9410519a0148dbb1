"""``edgefleet fleet devices remove``, ``tokens create --expires-in`` and ``tokens rotate``
against a recording HTTP server: the requests they send and what they print."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.fleet_server.client.conftest import FakeServer

TOKEN = {
    "id": 7,
    "name": "ci",
    "role": "operator",
    "created_at": "2026-12-07T10:00:00Z",
    "created_by": "bootstrap",
    "revoked_at": None,
    "last_used_at": None,
    "expires_at": "2026-12-14T10:00:00Z",
    "token": "new-secret",
}


def test_devices_remove(fleet: Any, fake_server: FakeServer) -> None:
    removed = {"device_id": "pi-old", "decommissioned_at": "2026-12-07T10:00:00Z"}
    fake_server.route("DELETE", "/api/v1/devices/pi-old", json_body=removed)
    result = fleet("devices", "remove", "pi-old")
    assert result.code == 0, result.err
    request = fake_server.only_request()
    assert (request.method, request.path) == ("DELETE", "/api/v1/devices/pi-old")
    assert "pi-old decommissioned" in result.out and "revoked" in result.out
    assert fleet("devices", "remove", "../tokens").code == 1  # never another endpoint
    assert fake_server.requests[-1].path == "/api/v1/devices/..%2Ftokens"


def test_devices_list_with_decommissioned(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("GET", "/api/v1/devices", json_body=[])
    assert fleet("devices", "list", "--decommissioned", "--json").code == 0
    assert fake_server.only_request().query == {"decommissioned": ["true"]}


def test_tokens_create_with_expiry_and_rotate(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("POST", "/api/v1/tokens", status=201, json_body=TOKEN)
    assert fleet("tokens", "create", "ci", "--role", "operator", "--expires-in", "7d").code == 0
    body = json.loads(fake_server.requests[-1].body)
    assert body == {"name": "ci", "role": "operator", "expires_in_s": 7 * 24 * 3600}
    assert fleet("tokens", "create", "ci", "--role", "viewer").code == 0
    assert json.loads(fake_server.requests[-1].body) == {"name": "ci", "role": "viewer"}

    fake_server.route("POST", "/api/v1/tokens/7/rotate", json_body=TOKEN)
    result = fleet("tokens", "rotate", "7", "--expires-in", "12h")
    assert result.code == 0, result.err
    assert json.loads(fake_server.requests[-1].body) == {"expires_in_s": 12 * 3600}
    assert result.out.splitlines()[-1] == "new-secret"
    assert fleet("tokens", "rotate", "7").code == 0
    assert json.loads(fake_server.requests[-1].body) == {}
    sent = len(fake_server.requests)
    for bad in (["7", "--expires-in", "soon"], ["0"]):
        with pytest.raises(SystemExit) as exited:
            fleet("tokens", "rotate", *bad)
        assert exited.value.code == 2
    assert len(fake_server.requests) == sent  # refused before any request
