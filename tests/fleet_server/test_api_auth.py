"""Operator API tokens with roles (401 vs 403, revocation) and the audit log, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from fleet_server.models import ApiToken, AuditLog
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import OPERATOR_TOKEN, bearer, operator, unique_id

pytestmark = pytest.mark.integration


def make_token(client: TestClient, role: str, name: str | None = None) -> dict[str, Any]:
    response = client.post(
        "/api/v1/tokens", json={"name": name or unique_id(role), "role": role}, headers=operator()
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


def audit_rows(runtime: Runtime) -> list[AuditLog]:
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        return list(session.exec(select(AuditLog).order_by(AuditLog.id)))  # type: ignore[arg-type]


def test_role_matrix(client: TestClient) -> None:
    tokens = {role: make_token(client, role)["token"] for role in ("viewer", "operator", "admin")}
    tokens["bootstrap"] = OPERATOR_TOKEN
    device_id = unique_id()
    registered = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
    device_token = registered.json()["token"]

    # (method, path, body) → status per role: viewer, operator, admin, bootstrap (an admin).
    cases: list[tuple[str, str, Any, tuple[int, int, int, int]]] = [
        ("GET", "/api/v1/devices", None, (200, 200, 200, 200)),
        ("GET", f"/api/v1/devices/{device_id}", None, (200, 200, 200, 200)),
        ("GET", "/api/v1/models", None, (200, 200, 200, 200)),
        ("GET", "/api/v1/ingest/stats", None, (200, 200, 200, 200)),
        ("GET", "/api/v1/enrollment-tokens", None, (200, 200, 200, 200)),
        ("PATCH", f"/api/v1/devices/{device_id}/tags", {"add": ["x"]}, (403, 200, 200, 200)),
        ("DELETE", f"/api/v1/devices/{device_id}/pin", None, (403, 200, 200, 200)),
        (
            "POST",
            "/api/v1/enrollment-tokens",
            {"expires_in_s": 600},
            (403, 201, 201, 201),
        ),
        ("GET", "/api/v1/tokens", None, (403, 403, 200, 200)),
        ("GET", "/api/v1/audit", None, (403, 403, 200, 200)),
    ]
    for method, path, body, expected in cases:
        for role, status in zip(
            ("viewer", "operator", "admin", "bootstrap"), expected, strict=True
        ):
            response = client.request(method, path, json=body, headers=bearer(tokens[role]))
            assert response.status_code == status, (method, path, role, response.text)
            if status == 403:
                needed = "admin" if "/tokens" in path or "/audit" in path else "operator"
                assert f"needs the {needed} role" in response.json()["detail"]
                assert role in response.json()["detail"]
    # Creating devices and tokens, one per role that may.
    for role, status in (("viewer", 403), ("operator", 201), ("admin", 201)):
        response = client.post(
            "/api/v1/devices", json={"device_id": unique_id()}, headers=bearer(tokens[role])
        )
        assert response.status_code == status, (role, response.text)
        response = client.post(
            "/api/v1/tokens",
            json={"name": unique_id("t"), "role": "viewer"},
            headers=bearer(tokens[role]),
        )
        assert response.status_code == (201 if role == "admin" else 403), (role, response.text)
    # 401, not 403: no token, a wrong one, or a device's token on an operator route.
    for headers in ({}, bearer("not-a-token-at-all-0123456789"), bearer(device_token)):
        assert client.get("/api/v1/devices", headers=headers).status_code == 401
        assert client.get("/api/v1/audit", headers=headers).status_code == 401
    # A device's token still reaches what devices use (and a viewer can download too).
    assert (
        client.get("/api/v1/models/nope/1/bundle", headers=bearer(device_token)).status_code == 404
    )
    assert (
        client.get("/api/v1/models/nope/1/bundle", headers=bearer(tokens["viewer"])).status_code
        == 404
    )


def test_a_viewer_reads_every_get_but_tokens_and_the_audit_log(client: TestClient) -> None:
    """What the README promises, for every GET the server publishes (the enrollment-token list
    was 403 to a viewer: its rows never hold the token, so it is not secret)."""
    admin_only = {"/api/v1/tokens", "/api/v1/audit"}
    viewer = make_token(client, "viewer")["token"]
    spec = client.get("/openapi.json").json()
    gets = [path for path, methods in spec["paths"].items() if "get" in methods]
    assert "/api/v1/enrollment-tokens" in gets and len(gets) >= 15
    required = {"/api/v1/charts/latency": {"model": "digits"}}  # a chart is of one model
    for path in gets:
        url = re.sub(r"\{[^}]+\}", "1", path)
        status = client.get(url, headers=bearer(viewer), params=required.get(path)).status_code
        if path in admin_only:
            assert status == 403, (path, status)
        else:
            assert status in (200, 404, 503), (path, status)
    listed = client.get("/api/v1/enrollment-tokens", headers=bearer(viewer))
    assert listed.status_code == 200 and '"token"' not in listed.text
    # Reading is all: creating or revoking one stays with operators.
    assert (
        client.post(
            "/api/v1/enrollment-tokens", json={"expires_in_s": 60}, headers=bearer(viewer)
        ).status_code
        == 403
    )
    assert client.delete("/api/v1/enrollment-tokens/1", headers=bearer(viewer)).status_code == 403


def test_tokens_are_shown_once_stored_hashed_and_revocable(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    created = make_token(client, "operator", name="ci-pipeline")
    assert created["name"] == "ci-pipeline" and created["role"] == "operator"
    assert created["created_by"] == "bootstrap" and created["revoked_at"] is None
    token = created["token"]
    assert len(token) >= 40
    assert client.get("/api/v1/devices", headers=bearer(token)).status_code == 200

    listed = client.get("/api/v1/tokens", headers=operator()).json()
    [entry] = [t for t in listed if t["name"] == "ci-pipeline"]
    assert "token" not in entry and entry["last_used_at"] is not None
    assert token not in json.dumps(listed)
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.name == "ci-pipeline")).one()
        assert token not in json.dumps(row.model_dump(mode="json"))

    # Names are unique and reserved names are refused; roles are checked.
    again = client.post(
        "/api/v1/tokens", json={"name": "ci-pipeline", "role": "viewer"}, headers=operator()
    )
    assert again.status_code == 409
    for body in (
        {"name": "bootstrap", "role": "admin"},
        {"name": "has space", "role": "viewer"},
        {"name": "x" * 65, "role": "viewer"},
        {"name": "ok", "role": "root"},
        {"name": "ok", "role": "viewer", "extra": 1},
        {"role": "viewer"},
    ):
        response = client.post("/api/v1/tokens", json=body, headers=operator())
        assert response.status_code == 422, (body, response.text)

    revoked = client.delete(f"/api/v1/tokens/{created['id']}", headers=operator())
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = client.get("/api/v1/devices", headers=bearer(token))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    # Revoking again keeps the first time; unknown and malformed ids are 404 / 422.
    twice = client.delete(f"/api/v1/tokens/{created['id']}", headers=operator())
    assert twice.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert client.delete("/api/v1/tokens/999999", headers=operator()).status_code == 404
    assert client.delete("/api/v1/tokens/abc", headers=operator()).status_code == 422
    assert client.delete("/api/v1/tokens/0", headers=operator()).status_code == 422


def test_every_mutating_call_is_audited_without_secrets(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    viewer = make_token(client, "viewer", name="audit-viewer")
    device_id = unique_id()
    created = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
    device_token = created.json()["token"]
    refused_viewer = client.post(
        "/api/v1/devices", json={"device_id": unique_id()}, headers=bearer(viewer["token"])
    )
    assert refused_viewer.status_code == 403
    anonymous = client.post("/api/v1/devices", json={"device_id": unique_id()})
    assert anonymous.status_code == 401
    wrong = client.post(
        "/api/v1/devices",
        json={"device_id": unique_id()},
        headers=bearer("a-wrong-token-that-must-not-be-logged"),
    )
    assert wrong.status_code == 401
    invalid = client.post("/api/v1/devices", json={"device_id": "Bad/Id"}, headers=operator())
    assert invalid.status_code == 422
    too_big = client.post(
        "/api/v1/devices",
        content=b"x" * (2 * 1024 * 1024),
        headers={**operator(), "content-type": "application/json"},
    )
    assert too_big.status_code == 413
    hostile_path = client.post("/api/v1/devices/a%00b%1b[31m/token", headers=operator())
    assert hostile_path.status_code in (400, 404)  # PostgreSQL refuses the NUL: 400
    client.get("/api/v1/devices", headers=operator())  # reads are not audited

    rows = audit_rows(runtime)
    summary = [(r.actor, r.role, r.method, r.route, r.status_code) for r in rows]
    devices_route = "/api/v1/devices"
    assert summary == [
        ("bootstrap", "admin", "POST", "/api/v1/tokens", 201),
        ("bootstrap", "admin", "POST", devices_route, 201),
        ("audit-viewer", "viewer", "POST", devices_route, 403),
        ("anonymous", None, "POST", devices_route, 401),
        ("unknown-token", None, "POST", devices_route, 401),
        ("bootstrap", "admin", "POST", devices_route, 422),
        ("anonymous", None, "POST", None, 413),
        (
            "bootstrap",
            "admin",
            "POST",
            "/api/v1/devices/{device_id}/token",
            hostile_path.status_code,
        ),
    ], summary
    assert rows[-1].path == "/api/v1/devices/a?b?[31m/token"
    assert rows[0].target == "token:audit-viewer" and rows[0].detail == {"role": "viewer"}
    assert rows[1].target == f"device:{device_id}"
    assert rows[-2].path == devices_route
    dumped = json.dumps([r.model_dump(mode="json") for r in rows])
    for secret in (
        viewer["token"],
        device_token,
        OPERATOR_TOKEN,
        "a-wrong-token-that-must-not-be-logged",
    ):
        assert secret not in dumped

    # The API view: admin only, newest first, filtered by actor and time, bounded limit.
    listed = client.get("/api/v1/audit", headers=operator()).json()
    assert [r["id"] for r in listed] == sorted((r["id"] for r in listed), reverse=True)
    assert listed[0]["status_code"] == hostile_path.status_code
    by_actor = client.get("/api/v1/audit?actor=audit-viewer", headers=operator()).json()
    assert [(r["actor"], r["status_code"]) for r in by_actor] == [("audit-viewer", 403)]
    future = client.get("/api/v1/audit?since=2999-01-01T00:00:00", headers=operator()).json()
    assert future == []
    past = client.get("/api/v1/audit?since=2000-01-01T00:00:00Z&limit=2", headers=operator())
    assert past.status_code == 200 and len(past.json()) == 2
    for query in (
        "limit=0",
        "limit=1001",
        "since=yesterday",
        "since=9999-12-31T23:59:59-01:00",
        "since=0001-01-01T00:00:00%2B01:00",
        "actor=" + "a" * 81,
    ):
        assert client.get(f"/api/v1/audit?{query}", headers=operator()).status_code == 422
    assert client.get("/api/v1/audit", headers=bearer(viewer["token"])).status_code == 403


def test_audit_detail_is_bounded_and_scrubbed() -> None:
    from fleet_server.services.audit import bounded_detail

    assert bounded_detail({}) is None
    clean = bounded_detail(
        {"query": {"token": "s3cret", "parent": "1.0"}, "nested": [{"password": "p"}]}
    )
    assert clean == {
        "query": {"token": "<redacted>", "parent": "1.0"},
        "nested": [{"password": "<redacted>"}],
    }
    huge = bounded_detail({"a": ["x" * 400] * 50})
    assert huge is not None and huge["truncated"] is True and huge["bytes"] > 4096
