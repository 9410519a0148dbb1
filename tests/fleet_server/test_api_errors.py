"""Refusals are the documented status with the one error body, on SQLite and PostgreSQL: the
body limit's 413 for a chunked body, 415 for an upload that is not multipart, 422 with
``detail`` a string, 401 with ``WWW-Authenticate``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fleet_server.api.limits import MAX_JSON_BODY
from tests.fleet_server.helpers import operator, unique_id

pytestmark = pytest.mark.integration


def _documented(client: TestClient, method: str, path: str) -> set[str]:
    spec = client.get("/openapi.json").json()
    return set(spec["paths"][path][method.lower()]["responses"])


def _is_error_body(response: object) -> bool:
    body = response.json()  # type: ignore[attr-defined]
    return isinstance(body, dict) and set(body) == {"detail"} and isinstance(body["detail"], str)


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    """Without a Content-Length the limit trips while FastAPI reads the body; it used to turn
    that into "400 There was an error parsing the body"."""
    device_id = unique_id()

    def chunks() -> Iterator[bytes]:
        yield b'{"device_id": "' + device_id.encode() + b'", "tags": ["'
        for _ in range(MAX_JSON_BODY // 65536 + 2):
            yield b"a" * 65536
        yield b'"]}'

    response = client.post(
        "/api/v1/devices",
        content=chunks(),
        headers={**operator(), "content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert _is_error_body(response) and "larger than" in response.json()["detail"]
    assert "413" in _documented(client, "POST", "/api/v1/devices")
    # Nothing was created.
    assert client.get(f"/api/v1/devices/{device_id}", headers=operator()).status_code == 404


def test_refusals_are_documented_with_the_error_body(client: TestClient) -> None:
    cases = [
        # An upload that is not multipart is 415 (was 400).
        ("POST", "/api/v1/models", "/api/v1/models", {"content": b"x"}, 415),
        # Request validation: 422 with detail a string (the schema said a list).
        (
            "GET",
            "/api/v1/devices/x/telemetry?limit=0",
            "/api/v1/devices/{device_id}/telemetry",
            {},
            422,
        ),
        ("POST", "/api/v1/devices", "/api/v1/devices", {"json": {"device_id": ""}}, 422),
        (
            "POST",
            "/api/v1/devices",
            "/api/v1/devices",
            {"content": b"{", "headers_extra": {"content-type": "application/json"}},
            422,
        ),
        # Not UTF-8: FastAPI's own 400, in the same body.
        (
            "POST",
            "/api/v1/devices",
            "/api/v1/devices",
            {
                "content": b'{"device_id": "\x80"}',
                "headers_extra": {"content-type": "application/json"},
            },
            400,
        ),
        ("GET", "/api/v1/rollouts/7777", "/api/v1/rollouts/{rollout_id}", {}, 404),
        ("DELETE", "/api/v1/tokens/7777", "/api/v1/tokens/{token_id}", {}, 404),
    ]
    for method, url, template, kwargs, status in cases:
        extra = kwargs.pop("headers_extra", {})
        assert isinstance(extra, dict)
        response = client.request(method, url, headers={**operator(), **extra}, **kwargs)
        assert response.status_code == status, (method, url, response.text)
        assert _is_error_body(response), (method, url, response.text)
        assert str(status) in _documented(client, method, template), (method, template)
    unauthenticated = client.get("/api/v1/devices")
    assert unauthenticated.status_code == 401 and _is_error_body(unauthenticated)
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
