"""Device registration and lookup over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import Device
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import bearer, operator, unique_id

pytestmark = pytest.mark.integration


def test_register_list_and_get(client: TestClient) -> None:
    device_id = unique_id()
    body = {"device_id": device_id, "device_class": "rpi4", "tags": ["lab", "lab", "north"]}
    created = client.post("/api/v1/devices", json=body, headers=operator())
    assert created.status_code == 201, created.text
    data = created.json()
    assert data["device_id"] == device_id and data["tags"] == ["lab", "north"]
    assert len(data["token"]) >= 40

    listed = client.get("/api/v1/devices", headers=operator())
    assert listed.status_code == 200
    assert [d["device_id"] for d in listed.json()] == [device_id]

    one = client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()
    assert one == {
        "device_id": device_id,
        "device_class": "rpi4",
        "tags": ["lab", "north"],
        "online": False,
        "last_seen": None,
        "phase": None,
        "running": None,
        "desired": None,
        "agent_version": None,
        "last_error": None,
        "last_telemetry": None,
        "pinned": None,
        "decommissioned_at": None,
    }
    assert "token" not in one
    telemetry = client.get(f"/api/v1/devices/{device_id}/telemetry", headers=operator())
    assert telemetry.status_code == 200 and telemetry.json() == []


def test_duplicate_and_invalid_registrations(client: TestClient) -> None:
    device_id = unique_id()
    first = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
    assert first.status_code == 201
    again = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
    assert again.status_code == 409 and device_id in again.json()["detail"]

    hostile = [
        {"device_id": "Has/Slash"},
        {"device_id": "+"},
        {"device_id": "a" * 200},
        {"device_id": ""},
        {"device_id": "ok-id", "tags": ["bad tag with spaces"]},
        {"device_id": "ok-id", "tags": ["t"] * 33},
        {"device_id": "ok-id", "unexpected": 1},
        {"device_id": 5},
        {},
    ]
    for body in hostile:
        response = client.post("/api/v1/devices", json=body, headers=operator())
        assert response.status_code == 422, (body, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail
    not_json = client.post(
        "/api/v1/devices",
        content=b"{not json",
        headers={**operator(), "content-type": "application/json"},
    )
    assert not_json.status_code == 422 and isinstance(not_json.json()["detail"], str)
    huge = {"device_id": "huge", "device_class": "x" * (2 * 1024 * 1024)}
    too_big = client.post("/api/v1/devices", json=huge, headers=operator())
    assert too_big.status_code == 413 and "larger than" in too_big.json()["detail"]
    streamed = client.post(
        "/api/v1/devices",
        content=iter([b'{"device_id": "huge", "tags": ["' + b"a" * 65536] * 40 + [b'"]}']),
        headers={**operator(), "content-type": "application/json"},
    )
    assert streamed.status_code in (400, 413), streamed.text
    # Nothing was lost or half-created by the refused requests.
    ids = [d["device_id"] for d in client.get("/api/v1/devices", headers=operator()).json()]
    assert ids == [device_id]


def test_auth_is_required(client: TestClient) -> None:
    device_id = unique_id()
    token = client.post(
        "/api/v1/devices", json={"device_id": device_id}, headers=operator()
    ).json()["token"]
    for headers in ({}, bearer("wrong-token"), {"Authorization": "Basic abc"}, bearer(token)):
        response = client.get("/api/v1/devices", headers=headers)
        assert response.status_code == 401, headers
        assert isinstance(response.json()["detail"], str)
    missing = client.post("/api/v1/devices", json={"device_id": unique_id()})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/devices/nope-404", headers=operator()).status_code == 404
    unknown = client.get("/api/v1/devices/nope-404/telemetry", headers=operator())
    assert unknown.status_code == 404
    bad_limit = client.get(f"/api/v1/devices/{device_id}/telemetry?limit=0", headers=operator())
    assert bad_limit.status_code == 422


def test_health_ready_metrics_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] and ready.json()["broker"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'edgefleet_ingest_rejected_total{reason="bad_json"} 0.0' in metrics.text
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (
        "/api/v1/devices",
        "/api/v1/models",
        "/api/v1/models/{name}/{version}/bundle",
        "/api/v1/assignments",
        "/api/v1/ingest/stats",
    ):
        assert path in paths
    upload = paths["/api/v1/models"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload


def test_tokens_are_stored_hashed(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    device_id = unique_id()
    token = client.post(
        "/api/v1/devices", json={"device_id": device_id}, headers=operator()
    ).json()["token"]
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        device = session.get(Device, device_id)
        assert device is not None
        assert device.token_hash == hashlib.sha256(token.encode()).hexdigest()
        dumped = json.dumps(device.model_dump(mode="json"))
    assert token not in dumped
