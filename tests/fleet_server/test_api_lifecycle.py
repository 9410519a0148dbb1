"""Devices and API tokens over their life, over HTTP on SQLite and PostgreSQL: a device is
decommissioned (soft delete: token revoked, out of the fleet, history kept, its messages
refused); API tokens expire (a 401 that says so) and rotate."""

from __future__ import annotations

import threading
from datetime import timedelta

import paho.mqtt.client as paho
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session

from edgefleet.contract import Telemetry
from fleet_server.messaging.writes import write_batch
from fleet_server.models import ApiToken, Device
from fleet_server.models.types import utcnow
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import bearer, operator, unique_id, wait_until

pytestmark = pytest.mark.integration

BUNDLE = "/api/v1/models/digits/9.9.9/bundle"
#: The broker closes the connection before the DELETE answers; this only bounds how long the
#: device's own network thread may take to notice on a loaded machine (not a speed assertion).
NOTICE_S = 10.0


def _telemetry(device_id: str, seq: int) -> Telemetry:
    return Telemetry(device_id=device_id, seq=seq, interval_s=1, model=None, inference_count=1)


def test_decommission_revokes_and_keeps_history(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    assert runtime.engine is not None and runtime.credentials.kind == "embedded"
    keep, gone = unique_id("keep"), unique_id("gone")
    tokens = {}
    for device_id in (keep, gone):
        created = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
        tokens[device_id] = created.json()["token"]
    now = utcnow()
    first = write_batch(engine=runtime.engine, items=[(_telemetry(gone, 1), now)])
    assert first.stored == 1
    # The device token downloads (no such bundle: 404) before, and is refused after.
    assert client.get(BUNDLE, headers=bearer(tokens[gone])).status_code == 404

    viewer = client.post("/api/v1/tokens", json={"name": unique_id("v"), "role": "viewer"},
                         headers=operator()).json()["token"]  # fmt: skip
    assert client.delete(f"/api/v1/devices/{gone}", headers=bearer(viewer)).status_code == 403
    assert client.delete(f"/api/v1/devices/{gone}", headers=bearer(tokens[keep])).status_code in (
        401,
        403,
    )
    assert client.delete("/api/v1/devices/nope", headers=operator()).status_code == 404

    removed = client.delete(f"/api/v1/devices/{gone}", headers=operator())
    assert removed.status_code == 200, removed.text
    when = removed.json()["decommissioned_at"]
    assert when is not None
    again = client.delete(f"/api/v1/devices/{gone}", headers=operator())
    assert again.status_code == 200 and again.json()["decommissioned_at"] == when  # idempotent

    assert client.get(BUNDLE, headers=bearer(tokens[gone])).status_code == 401
    assert client.get(BUNDLE, headers=bearer(tokens[keep])).status_code == 404
    listed = {d["device_id"] for d in client.get("/api/v1/devices", headers=operator()).json()}
    assert listed == {keep}
    every = client.get("/api/v1/devices?decommissioned=true", headers=operator()).json()
    assert {d["device_id"] for d in every} == {keep, gone}
    # History kept and readable; new messages refused (counted as from an unknown device).
    history = client.get(f"/api/v1/devices/{gone}/telemetry", headers=operator()).json()
    assert [r["seq"] for r in history] == [1]
    later = write_batch(engine=runtime.engine, items=[(_telemetry(gone, 2), utcnow())])
    assert (later.stored, later.unknown_devices) == (0, 1)
    with Session(runtime.engine) as session:
        row = session.get(Device, gone)
        assert row is not None and row.mqtt_password_hash is None and not row.online
    # Not a target any more: assignments, rotation, the audit names the action.
    assigned = client.post(
        "/api/v1/assignments",
        json={"model": "digits", "version": "1.0.0", "device_ids": [gone]},
        headers=operator(),
    )
    assert assigned.status_code == 404
    assert client.post(f"/api/v1/devices/{gone}/token", headers=operator()).status_code == 404
    audit = client.get("/api/v1/audit", headers=operator()).json()
    assert any(r["method"] == "DELETE" and r["target"] == f"device:{gone}" for r in audit)


def test_api_tokens_expire_with_a_clear_reason(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    assert runtime.engine is not None
    name = unique_id("ci")
    created = client.post(
        "/api/v1/tokens",
        json={"name": name, "role": "viewer", "expires_in_s": 3600},
        headers=operator(),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["expires_at"] is not None
    assert client.get("/api/v1/whoami", headers=bearer(body["token"])).status_code == 200
    with Session(runtime.engine) as session:
        row = session.get(ApiToken, body["id"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
        session.commit()
    refused = client.get("/api/v1/whoami", headers=bearer(body["token"]))
    assert refused.status_code == 401
    assert f"API token {name!r} expired at" in refused.json()["detail"]
    # An expired token renews only with a new expiry.
    stale = client.post(f"/api/v1/tokens/{body['id']}/rotate", json={}, headers=operator())
    assert stale.status_code == 409 and "expired" in stale.json()["detail"]
    renewed = client.post(
        f"/api/v1/tokens/{body['id']}/rotate", json={"expires_in_s": 600}, headers=operator()
    )
    assert renewed.status_code == 200, renewed.text
    assert client.get("/api/v1/whoami", headers=bearer(renewed.json()["token"])).json() == {
        "actor": name,
        "role": "viewer",
    }


def test_api_tokens_rotate(app: tuple[TestClient, Runtime]) -> None:
    client, _ = app
    created = client.post(
        "/api/v1/tokens", json={"name": unique_id("op"), "role": "operator"}, headers=operator()
    ).json()
    assert created["expires_at"] is None
    rotated = client.post(f"/api/v1/tokens/{created['id']}/rotate", headers=operator())
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert (new["id"], new["name"], new["role"]) == (created["id"], created["name"], "operator")
    assert new["token"] != created["token"] and new["expires_at"] is None
    assert client.get("/api/v1/whoami", headers=bearer(created["token"])).status_code == 401
    assert client.get("/api/v1/whoami", headers=bearer(new["token"])).status_code == 200
    # Only an admin rotates; the operator token cannot rotate itself.
    own = client.post(f"/api/v1/tokens/{created['id']}/rotate", headers=bearer(new["token"]))
    assert own.status_code == 403
    assert client.post("/api/v1/tokens/999999/rotate", headers=operator()).status_code == 404
    client.delete(f"/api/v1/tokens/{created['id']}", headers=operator())
    revoked = client.post(f"/api/v1/tokens/{created['id']}/rotate", headers=operator())
    assert revoked.status_code == 409


MALFORMED: list[object] = [
    {"expires_in_s": 59},
    {"expires_in_s": -1},
    {"expires_in_s": 10**12},
    {"expires_in_s": "soon"},
    {"expires_in_s": 600, "extra": 1},
    [],
]


def test_malformed_token_bodies_are_refused(app: tuple[TestClient, Runtime]) -> None:
    client, _ = app
    created = client.post(
        "/api/v1/tokens", json={"name": unique_id("m"), "role": "viewer"}, headers=operator()
    ).json()
    for body in MALFORMED:
        path = f"/api/v1/tokens/{created['id']}/rotate"
        refused = client.post(path, json=body, headers=operator())
        assert refused.status_code == 422, body
        if isinstance(body, dict):
            made = client.post(
                "/api/v1/tokens",
                json={"name": unique_id("m"), "role": "viewer", **body},
                headers=operator(),
            )
            assert made.status_code == 422, body
    # The token was not changed by the refusals.
    assert client.get("/api/v1/whoami", headers=bearer(created["token"])).status_code == 200


class _Device:
    """A device's MQTT connection to the embedded broker that records when it was closed."""

    def __init__(self, port: int, device_id: str, token: str) -> None:
        self.connack: list[str] = []
        self.disconnected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.username_pw_set(device_id, token)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.append(str(reason))
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.reconnect_delay_set(60, 60)  # no reconnect within the test
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def admitted(self) -> bool:
        wait_until(lambda: bool(self.connack), timeout=10, what="CONNACK")
        return self.connack[0] == "Success"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_embedded_broker_cuts_off_deleted_and_rotated_devices(
    app: tuple[TestClient, Runtime],
) -> None:
    """As with Mosquitto's dynamic security (test_dynsec_mosquitto.py): a DELETE closes the
    device's live connection at once and it cannot log in again; a token rotation closes the
    connection made with the old token; other devices stay connected."""
    client, runtime = app
    assert runtime.broker is not None and runtime.credentials.kind == "embedded"
    port = runtime.broker.port
    gone, rotated, keep = unique_id("gone"), unique_id("rot"), unique_id("keep")
    tokens = {
        d: client.post("/api/v1/devices", json={"device_id": d}, headers=operator()).json()["token"]
        for d in (gone, rotated, keep)
    }
    devices = {d: _Device(port, d, tokens[d]) for d in tokens}
    try:
        assert all(device.admitted() for device in devices.values())
        assert client.delete(f"/api/v1/devices/{gone}", headers=operator()).status_code == 200
        assert devices[gone].disconnected.wait(NOTICE_S), "the deleted device is still connected"
        again = _Device(port, gone, tokens[gone])
        try:
            assert not again.admitted()  # refused: the token is revoked
        finally:
            again.close()
        new = client.post(f"/api/v1/devices/{rotated}/token", headers=operator())
        assert new.status_code == 200, new.text
        assert devices[rotated].disconnected.wait(NOTICE_S), "old token still connected"
        fresh = _Device(port, rotated, new.json()["token"])
        try:
            assert fresh.admitted()
        finally:
            fresh.close()
        assert not devices[keep].disconnected.is_set()
        # Deleting again (idempotent) with nothing connected is fine.
        assert client.delete(f"/api/v1/devices/{gone}", headers=operator()).status_code == 200
    finally:
        for device in devices.values():
            device.close()
