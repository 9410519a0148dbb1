"""Pinning a device to a version (assigned at once; assignments skip it) and editing tags, on
SQLite and PostgreSQL with the real embedded broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from edgefleet.contract import Channel, DesiredState, topic
from fleet_server.models import Device
from fleet_server.runtime import Runtime
from fleet_server.services.devices import is_pinned
from tests.fleet_server.helpers import (
    MqttProbe,
    operator,
    server_mqtt_url,
    unique_id,
    upload,
    wait_until,
)
from tests.utils.artifacts import build_digits_artifact, bundle_of

pytestmark = pytest.mark.integration


def _register(client: TestClient, device_id: str, tags: list[str]) -> None:
    response = client.post(
        "/api/v1/devices", json={"device_id": device_id, "tags": tags}, headers=operator()
    )
    assert response.status_code == 201, response.text


def _states(probe: MqttProbe, device_id: str, count: int) -> list[DesiredState]:
    desired = topic(device_id, Channel.DESIRED)
    wait_until(lambda: len(probe.received(desired)) >= count, what="desired state")
    return [DesiredState.model_validate_json(m[1]) for m in probe.received(desired)]


def test_pin_assigns_now_and_assignments_skip_it(
    app: tuple[TestClient, Runtime], digits_bundle: Path, tmp_path: Path
) -> None:
    client, runtime = app
    upload(client, digits_bundle)
    newer = bundle_of(
        build_digits_artifact(tmp_path / "v2", version="2.0.0"), tmp_path / "v2.tar.gz"
    )
    assert upload(client, newer).status_code == 201
    pinned, free = unique_id("pin"), unique_id("free")
    _register(client, pinned, ["lab"])
    _register(client, free, ["lab"])
    probe = MqttProbe(server_mqtt_url(runtime))
    try:
        probe.subscribe(topic(pinned, Channel.DESIRED))
        response = client.put(
            f"/api/v1/devices/{pinned}/pin",
            json={"model": "digits", "version": "1.0.0"},
            headers=operator(),
        )
        assert response.status_code == 200, response.text
        shown = response.json()
        assert shown["pinned"] == {"name": "digits", "version": "1.0.0"}
        assert shown["desired"] == {"name": "digits", "version": "1.0.0"}
        [state] = _states(probe, pinned, 1)
        assert state.model is not None and state.model.version == "1.0.0" and state.seq == 1

        assigned = client.post(
            "/api/v1/assignments",
            json={"model": "digits", "version": "2.0.0", "tag": "lab"},
            headers=operator(),
        )
        assert assigned.status_code == 200, assigned.text
        assert assigned.json() == {
            "model": "digits",
            "version": "2.0.0",
            "devices": [free],
            "skipped": [pinned],
            "incompatible": [],
        }
        only_pinned = client.post(
            "/api/v1/assignments",
            json={"model": "digits", "version": "2.0.0", "device_ids": [pinned]},
            headers=operator(),
        )
        assert only_pinned.json()["devices"] == [] and only_pinned.json()["skipped"] == [pinned]
        still = client.get(f"/api/v1/devices/{pinned}", headers=operator()).json()
        assert still["desired"] == {"name": "digits", "version": "1.0.0"}
        assert runtime.bus is not None and runtime.bus.wait_published(5)
        assert len(probe.received(topic(pinned, Channel.DESIRED))) == 1  # nothing new sent
        assert runtime.engine is not None
        with Session(runtime.engine) as session:
            row = session.get(Device, pinned)
            assert row is not None and is_pinned(row)

        unpinned = client.delete(f"/api/v1/devices/{pinned}/pin", headers=operator())
        assert unpinned.status_code == 200 and unpinned.json()["pinned"] is None
        assert unpinned.json()["desired"] == {"name": "digits", "version": "1.0.0"}
        again = client.post(
            "/api/v1/assignments",
            json={"model": "digits", "version": "2.0.0", "tag": "lab"},
            headers=operator(),
        )
        assert again.json()["devices"] == sorted([pinned, free]) and again.json()["skipped"] == []
        states = _states(probe, pinned, 2)
        assert [(s.seq, s.model.version if s.model else None) for s in states] == [
            (1, "1.0.0"),
            (2, "2.0.0"),
        ]
    finally:
        probe.close()


def test_pin_refusals_change_nothing(client: TestClient, digits_bundle: Path) -> None:
    upload(client, digits_bundle)
    device_id = unique_id()
    _register(client, device_id, [])
    cases = [
        (f"/api/v1/devices/{device_id}/pin", {"model": "digits", "version": "9.9"}, 404),
        (f"/api/v1/devices/{device_id}/pin", {"model": "nope", "version": "1.0.0"}, 404),
        ("/api/v1/devices/no-such-dev/pin", {"model": "digits", "version": "1.0.0"}, 404),
        (f"/api/v1/devices/{device_id}/pin", {"model": "digits"}, 422),
        (f"/api/v1/devices/{device_id}/pin", {"model": "../x", "version": "1"}, 422),
        (f"/api/v1/devices/{device_id}/pin", {"model": "d", "version": "1", "x": 1}, 422),
    ]
    for path, body, status in cases:
        response = client.put(path, json=body, headers=operator())
        assert response.status_code == status, (body, response.text)
    assert client.put(cases[0][0], json=cases[0][1]).status_code == 401
    assert client.delete("/api/v1/devices/no-such-dev/pin", headers=operator()).status_code == 404
    shown = client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()
    assert shown["pinned"] is None and shown["desired"] is None


def test_tags_add_and_remove(client: TestClient) -> None:
    device_id = unique_id()
    _register(client, device_id, ["lab", "north"])
    path = f"/api/v1/devices/{device_id}/tags"
    response = client.patch(
        path, json={"add": ["canary", "eu"], "remove": ["north"]}, headers=operator()
    )
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == ["canary", "eu", "lab"]
    both = client.patch(path, json={"add": ["x"], "remove": ["x", "lab"]}, headers=operator())
    assert both.json()["tags"] == ["canary", "eu"]
    for body in ({"add": ["bad tag"]}, {"add": ["t"] * 33}, {"other": []}, {"add": "lab"}):
        assert client.patch(path, json=body, headers=operator()).status_code == 422, body
    too_many = client.patch(path, json={"add": [f"t{i}" for i in range(31)]}, headers=operator())
    assert too_many.status_code == 422 and "at most 32" in too_many.json()["detail"]
    assert client.patch("/api/v1/devices/nope/tags", json={}, headers=operator()).status_code == 404
    shown = client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()
    assert shown["tags"] == ["canary", "eu"]
