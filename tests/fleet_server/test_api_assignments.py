"""Assignments: stored per device, published as retained desired state, republished on restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edgefleet.contract import Channel, DesiredState, topic
from fleet_server.api.deps import get_settings
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import (
    MqttProbe,
    make_settings,
    operator,
    running_app,
    server_mqtt_url,
    unique_id,
    upload,
    wait_until,
)

pytestmark = pytest.mark.integration


def _register(client: TestClient, device_id: str, tags: list[str] | None = None) -> str:
    response = client.post(
        "/api/v1/devices", json={"device_id": device_id, "tags": tags or []}, headers=operator()
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert isinstance(token, str)
    return token


def _desired(probe: MqttProbe, device_id: str, count: int) -> list[DesiredState]:
    desired_topic = topic(device_id, Channel.DESIRED)
    wait_until(lambda: len(probe.received(desired_topic)) >= count, what="desired state")
    return [DesiredState.model_validate_json(m[1]) for m in probe.received(desired_topic)]


def test_assign_publishes_retained_desired_state(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    model = upload(client, digits_bundle).json()
    lab_a, lab_b, other = unique_id(), unique_id(), unique_id()
    _register(client, lab_a, ["lab"])
    _register(client, lab_b, ["lab", "north"])
    _register(client, other)

    response = client.post(
        "/api/v1/assignments",
        json={"model": "digits", "version": "1.0.0", "tag": "lab", "device_ids": [other]},
        headers=operator(),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model": "digits",
        "version": "1.0.0",
        "devices": sorted([lab_a, lab_b, other]),
        "skipped": [],
        "incompatible": [],
    }
    assert runtime.bus is not None and runtime.bus.wait_published(5)

    # A subscriber arriving later still gets it: the message is retained.
    probe = MqttProbe(server_mqtt_url(runtime))
    try:
        probe.subscribe(topic(lab_a, Channel.DESIRED))
        probe.subscribe(topic(other, Channel.DESIRED))
        [state] = _desired(probe, lab_a, 1)
        _topic, raw, retained, qos = probe.received(topic(lab_a, Channel.DESIRED))[0]
        assert retained and qos == 1
        assert json.loads(raw)["kind"] == "desired"
        # Without a capture policy the payload is version 1: agents before contract 2 read it.
        assert json.loads(raw)["schema_version"] == 1 and "capture" not in json.loads(raw)
        assert state.device_id == lab_a and state.seq == 1
        assert state.model is not None
        assert (state.model.name, state.model.version) == ("digits", "1.0.0")
        assert state.model.url == "http://fleet.test:8080/api/v1/models/digits/1.0.0/bundle"
        assert (state.model.sha256, state.model.size) == (model["sha256"], model["size"])
        assert state.model.signature is None

        assert [s.seq for s in _desired(probe, other, 1)] == [1]
        # Assigning again bumps only that device's revision.
        again = client.post(
            "/api/v1/assignments",
            json={"model": "digits", "version": "1.0.0", "device_ids": [other]},
            headers=operator(),
        )
        assert again.json()["devices"] == [other]
        states = _desired(probe, other, 2)
        assert [s.seq for s in states] == [1, 2]
    finally:
        probe.close()

    shown = client.get(f"/api/v1/devices/{lab_b}", headers=operator()).json()
    assert shown["desired"] == {"name": "digits", "version": "1.0.0"}


def test_settings_dependency_can_be_overridden(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    upload(client, digits_bundle)
    device_id = unique_id()
    _register(client, device_id)
    overridden = runtime.settings.model_copy(update={"public_url": "https://cdn.example"})
    fastapi_app = client.app
    assert isinstance(fastapi_app, FastAPI)
    fastapi_app.dependency_overrides[get_settings] = lambda: overridden
    try:
        probe = MqttProbe(server_mqtt_url(runtime))
        probe.subscribe(topic(device_id, Channel.DESIRED))
        client.post(
            "/api/v1/assignments",
            json={"model": "digits", "version": "1.0.0", "device_ids": [device_id]},
            headers=operator(),
        )
        [state] = _desired(probe, device_id, 1)
        probe.close()
    finally:
        fastapi_app.dependency_overrides.clear()
    assert state.model is not None
    assert state.model.url == "https://cdn.example/api/v1/models/digits/1.0.0/bundle"


def test_assignment_errors(app: tuple[TestClient, Runtime], digits_bundle: Path) -> None:
    client, _ = app
    upload(client, digits_bundle)
    device_id = unique_id()
    _register(client, device_id)
    cases = [
        ({"model": "nope", "version": "1.0.0", "device_ids": [device_id]}, 404),
        ({"model": "digits", "version": "9.9.9", "device_ids": [device_id]}, 404),
        ({"model": "digits", "version": "1.0.0", "device_ids": ["unknown-dev"]}, 404),
        ({"model": "digits", "version": "1.0.0", "tag": "no-such-tag"}, 404),
        ({"model": "digits", "version": "1.0.0"}, 422),
        ({"model": "digits", "version": "1.0.0", "device_ids": []}, 422),
        ({"model": "../etc", "version": "1.0.0", "device_ids": [device_id]}, 422),
        ({"model": "digits", "version": "1.0.0", "device_ids": ["BAD/ID"]}, 422),
        ({"model": "digits", "version": "1.0.0", "device_ids": [device_id], "x": 1}, 422),
    ]
    for body, status in cases:
        response = client.post("/api/v1/assignments", json=body, headers=operator())
        assert response.status_code == status, (body, response.text)
        assert isinstance(response.json()["detail"], str)
    assert client.post("/api/v1/assignments", json=cases[0][0]).status_code == 401
    # A refused assignment changed nothing.
    shown = client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()
    assert shown["desired"] is None


def test_restart_republishes_desired_state(
    tmp_path: Path, database_url: str, digits_bundle: Path
) -> None:
    """The database is the truth: a server restarted with a fresh (empty) embedded broker
    publishes every device's desired state again."""
    device_id = unique_id()
    settings = make_settings(tmp_path, database_url)
    with running_app(settings) as (client, _):
        upload(client, digits_bundle)
        _register(client, device_id)
        client.post(
            "/api/v1/assignments",
            json={"model": "digits", "version": "1.0.0", "device_ids": [device_id]},
            headers=operator(),
        )
    fresh = make_settings(tmp_path, database_url)  # new broker port, same database
    with running_app(fresh) as (_, runtime):
        probe = MqttProbe(server_mqtt_url(runtime))
        try:
            probe.subscribe(topic(device_id, Channel.DESIRED))
            [state] = _desired(probe, device_id, 1)
            assert state.seq == 1 and state.model is not None
            assert state.model.version == "1.0.0"
        finally:
            probe.close()
