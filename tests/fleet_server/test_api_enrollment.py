"""Enrollment tokens: one-time (or n-time) use under concurrency, expiry, refusals that create
nothing; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select, update

from fleet_server.models import Device, EnrollmentToken
from fleet_server.models.types import utcnow
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import (
    MqttProbe,
    bearer,
    device_mqtt_url,
    operator,
    unique_id,
)

pytestmark = pytest.mark.integration


def _grant(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/enrollment-tokens", json={"expires_in_s": 3600, **body}, headers=operator()
    )
    assert response.status_code == 201, response.text
    data = response.json()
    assert isinstance(data, dict)
    return data


def _device_ids(runtime: Runtime) -> set[str]:
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        return set(session.exec(select(Device.device_id)))


def test_enroll_gives_working_credentials(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    grant = _grant(client, device_class="rpi4", tags=["lab", "north"])
    assert grant["uses"] == grant["uses_left"] == 1 and grant["created_by"] == "bootstrap"
    token = grant["token"]
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        row = session.exec(select(EnrollmentToken)).one()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()

    device_id = unique_id("enr")
    enrolled = client.post(
        "/api/v1/enroll", json={"enrollment_token": token, "device_id": device_id}
    )
    assert enrolled.status_code == 201, enrolled.text
    body = enrolled.json()
    assert body["device_id"] == device_id and body["device_class"] == "rpi4"
    assert body["tags"] == ["lab", "north"]
    assert body["mqtt_username"] == device_id and body["mqtt_password"] == body["token"]
    # The credentials work: HTTP (as the device) and MQTT (the embedded broker checks them).
    shown = client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()
    assert shown["device_class"] == "rpi4"
    download = client.get("/api/v1/models/none/1/bundle", headers=bearer(body["token"]))
    assert download.status_code == 404
    probe = MqttProbe(device_mqtt_url(runtime, device_id, body["mqtt_password"]))
    probe.close()

    again = client.post("/api/v1/enroll", json={"enrollment_token": token})
    assert again.status_code == 410 and "used up" in again.json()["detail"]
    # Audit: the operator's grant and both enrollment attempts, never the tokens.
    audit = client.get("/api/v1/audit", headers=operator()).json()
    actors = [(r["actor"], r["route"], r["status_code"]) for r in audit[:3]]
    assert actors == [
        ("enrollment", "/api/v1/enroll", 410),
        (f"device:{device_id}", "/api/v1/enroll", 201),
        ("bootstrap", "/api/v1/enrollment-tokens", 201),
    ]
    assert token not in str(audit) and body["token"] not in str(audit)


def test_generated_id_and_class_rules(client: TestClient) -> None:
    grant = _grant(client, uses=3)
    generated = client.post("/api/v1/enroll", json={"enrollment_token": grant["token"]})
    assert generated.status_code == 201
    assert generated.json()["device_id"].startswith("dev-")
    typed = _grant(client, device_class="jetson")
    wrong = client.post(
        "/api/v1/enroll", json={"enrollment_token": typed["token"], "device_class": "rpi4"}
    )
    assert wrong.status_code == 409 and "jetson" in wrong.json()["detail"]
    # The refused attempt did not use the token up.
    right = client.post(
        "/api/v1/enroll", json={"enrollment_token": typed["token"], "device_class": "jetson"}
    )
    assert right.status_code == 201
    taken = client.post(
        "/api/v1/enroll",
        json={"enrollment_token": grant["token"], "device_id": right.json()["device_id"]},
    )
    assert taken.status_code == 409
    free = client.post("/api/v1/enroll", json={"enrollment_token": grant["token"]})
    assert free.status_code == 201  # 3 uses: generated, (refused: not counted), this one


def test_refusals_create_nothing(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    grant = _grant(client)
    before = _device_ids(runtime)
    unknown = client.post("/api/v1/enroll", json={"enrollment_token": "no-such-token"})
    assert unknown.status_code == 401 and "unknown" in unknown.json()["detail"]
    hostile: list[Any] = [
        {},
        {"enrollment_token": ""},
        {"enrollment_token": "x" * 201},
        {"enrollment_token": grant["token"], "device_id": "Bad/Id"},
        {"enrollment_token": grant["token"], "device_id": "+"},
        {"enrollment_token": grant["token"], "extra": True},
        {"enrollment_token": 5},
        ["not", "an", "object"],
    ]
    for body in hostile:
        response = client.post("/api/v1/enroll", json=body)
        assert response.status_code == 422, (body, response.text)
    huge = client.post("/api/v1/enroll", json={"enrollment_token": "x" * (2 * 1024 * 1024)})
    assert huge.status_code == 413
    for body in (
        {"expires_in_s": 31 * 24 * 3600},
        {"expires_in_s": 0},
        {"expires_in_s": 600, "uses": 0},
        {"expires_in_s": 600, "uses": 10_001},
        {"expires_in_s": 600, "tags": ["bad tag"]},
        {},
    ):
        response = client.post("/api/v1/enrollment-tokens", json=body, headers=operator())
        assert response.status_code == 422, (body, response.text)
    assert client.post("/api/v1/enrollment-tokens", json={"expires_in_s": 600}).status_code == 401
    assert _device_ids(runtime) == before
    # The token survived every refusal.
    assert (
        client.post("/api/v1/enroll", json={"enrollment_token": grant["token"]}).status_code == 201
    )


def test_expired_token_is_gone(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    grant = _grant(client, uses=5)
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        session.exec(
            update(EnrollmentToken)
            .where(col(EnrollmentToken.id) == grant["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    before = _device_ids(runtime)
    expired = client.post("/api/v1/enroll", json={"enrollment_token": grant["token"]})
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    assert _device_ids(runtime) == before


def test_list_and_revoke(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    kept = _grant(client, uses=3, tags=["keep"])
    leaked = _grant(client, uses=5, tags=["leaked"])
    first = client.post(
        "/api/v1/enroll",
        json={"enrollment_token": leaked["token"], "device_id": unique_id("before")},
    )
    assert first.status_code == 201, first.text

    listed = client.get("/api/v1/enrollment-tokens", headers=operator())
    assert listed.status_code == 200, listed.text
    rows = {row["id"]: row for row in listed.json()}
    assert rows[leaked["id"]]["state"] == "active" and rows[leaked["id"]]["uses_left"] == 4
    assert list(rows)[:2] == [leaked["id"], kept["id"]]  # newest first
    text = listed.text
    assert leaked["token"] not in text and "token_hash" not in text and '"token"' not in text

    revoked = client.delete(f"/api/v1/enrollment-tokens/{leaked['id']}", headers=operator())
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked" and revoked.json()["revoked_at"] is not None
    again = client.delete(f"/api/v1/enrollment-tokens/{leaked['id']}", headers=operator())
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # idempotent

    before = _device_ids(runtime)
    refused = client.post("/api/v1/enroll", json={"enrollment_token": leaked["token"]})
    assert refused.status_code == 410 and "revoked" in refused.json()["detail"]
    assert _device_ids(runtime) == before
    # The device it enrolled before keeps working credentials; the other token still enrolls.
    device = first.json()
    assert (
        client.get(f"/api/v1/devices/{device['device_id']}", headers=operator()).status_code == 200
    )
    assert (
        client.post("/api/v1/enroll", json={"enrollment_token": kept["token"]}).status_code == 201
    )

    active = client.get("/api/v1/enrollment-tokens?active=true", headers=operator()).json()
    assert leaked["id"] not in {row["id"] for row in active}
    assert kept["id"] in {row["id"] for row in active}
    # Refusals: unknown id, bad ids, no token, a viewer.
    assert client.delete("/api/v1/enrollment-tokens/999999", headers=operator()).status_code == 404
    for bad in ("0", "-1", "x", str(2**63)):
        assert (
            client.delete(f"/api/v1/enrollment-tokens/{bad}", headers=operator()).status_code == 422
        )
    assert client.get("/api/v1/enrollment-tokens?limit=0", headers=operator()).status_code == 422
    assert client.get("/api/v1/enrollment-tokens").status_code == 401
    assert client.delete(f"/api/v1/enrollment-tokens/{kept['id']}").status_code == 401


def test_revoke_between_read_and_take_is_refused(app: tuple[TestClient, Runtime]) -> None:
    """The use is taken by a conditional UPDATE that also requires ``revoked_at IS NULL``: a
    revocation committed after enroll() read the row still stops it."""
    from fleet_server.models import EnrollRequest
    from fleet_server.services import enrollment as service
    from fleet_server.services import mosquitto

    client, runtime = app
    grant = _grant(client, uses=2)
    assert runtime.engine is not None
    real_hash = mosquitto.mosquitto_hash

    def revoke_meanwhile(token: str) -> str:
        client.delete(f"/api/v1/enrollment-tokens/{grant['id']}", headers=operator())
        return real_hash(token)

    before = _device_ids(runtime)
    with Session(runtime.engine) as session, pytest.MonkeyPatch.context() as patch:
        patch.setattr(service, "mosquitto_hash", revoke_meanwhile)
        with pytest.raises(service.Gone, match="revoked"):
            service.enroll(session=session, request=EnrollRequest(enrollment_token=grant["token"]))
    assert _device_ids(runtime) == before
    with Session(runtime.engine) as session:
        row = session.get(EnrollmentToken, grant["id"])
        assert row is not None and row.uses_left == 2 and row.revoked_at is not None


@pytest.mark.parametrize("uses", [1, 3])
def test_concurrent_use_enrolls_exactly_uses_devices(
    app: tuple[TestClient, Runtime], uses: int
) -> None:
    client, runtime = app
    grant = _grant(client, uses=uses)
    before = _device_ids(runtime)
    attempts = 8
    barrier = threading.Barrier(attempts)
    statuses: list[int] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        barrier.wait()
        response = client.post(
            "/api/v1/enroll",
            json={"enrollment_token": grant["token"], "device_id": unique_id(f"race{i}")},
        )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201] * uses + [410] * (attempts - uses), statuses
    assert len(_device_ids(runtime) - before) == uses
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        row = session.get(EnrollmentToken, grant["id"])
        assert row is not None and row.uses_left == 0
