"""Capture policies: per model name, overridden per version, carried in the retained desired
state each device receives (republished when a policy changes), audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from edgefleet.contract import Channel, DesiredState, decode, topic
from fleet_server.models import AuditLog
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import (
    MqttProbe,
    bearer,
    operator,
    server_mqtt_url,
    upload,
    wait_until,
)
from tests.fleet_server.sample_helpers import assign, register, set_policy

pytestmark = pytest.mark.integration


def _last_desired(probe: MqttProbe, device_id: str, seq_above: int) -> DesiredState:
    desired_topic = topic(device_id, Channel.DESIRED)

    def newest() -> DesiredState | None:
        received = probe.received(desired_topic)
        if not received:
            return None
        state = decode(Channel.DESIRED, received[-1][1])
        assert isinstance(state, DesiredState)
        return state if state.seq > seq_above else None

    wait_until(lambda: newest() is not None, what=f"desired state above seq {seq_above}")
    state = newest()
    assert state is not None
    return state


def test_policy_reaches_devices_in_their_desired_state(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    assert upload(client, digits_bundle).status_code == 201
    device, token = register(client)
    assign(client, [device])
    probe = MqttProbe(server_mqtt_url(runtime))
    try:
        probe.subscribe(topic(device, Channel.DESIRED))
        first = _last_desired(probe, device, 0)
        assert first.capture is None  # no policy: capture nothing
        # ... and the payload is a version-1 one, byte for byte: a version-1 agent reads it.
        raw = json.loads(probe.received(topic(device, Channel.DESIRED))[-1][1])
        assert raw["schema_version"] == 1 and "capture" not in raw

        shown = set_policy(client, low_confidence=0.4, random=0.01, max_per_day=50)
        assert shown["effective_from"] == "model" and shown["republished"] == 1
        state = _last_desired(probe, device, first.seq)
        assert state.capture is not None and state.capture.low_confidence == 0.4
        assert state.schema_version == 2
        assert state.capture.max_per_day == 50 and state.capture.random == 0.01
        assert state.model is not None and state.model.version == "1.0.0"  # same model

        # The version's own policy replaces the model's for devices running that version.
        set_policy(client, version="1.0.0", margin=0.1, max_per_hour=5)
        override = _last_desired(probe, device, state.seq)
        assert override.capture is not None
        assert override.capture.margin == 0.1 and override.capture.low_confidence is None
        got = client.get("/api/v1/models/digits/1.0.0/capture", headers=operator()).json()
        assert got["effective_from"] == "version" and got["policy"]["max_per_hour"] == 5
        got = client.get("/api/v1/models/digits/capture", headers=operator()).json()
        assert got["policy"]["low_confidence"] == 0.4

        # Removing the version's falls back to the model's.
        response = client.delete("/api/v1/models/digits/1.0.0/capture", headers=operator())
        assert response.status_code == 200 and response.json()["effective_from"] == "model"
        back = _last_desired(probe, device, override.seq)
        assert back.capture is not None and back.capture.low_confidence == 0.4
    finally:
        probe.close()

    # Bad input: 422 naming the field; unknown model 404; a device or a viewer cannot set it.
    response = client.put(
        "/api/v1/models/digits/capture", json={"jpeg_quality": 101}, headers=operator()
    )
    assert response.status_code == 422 and "jpeg_quality" in response.json()["detail"]
    response = client.put("/api/v1/models/digits/capture", json={"nope": 1}, headers=operator())
    assert response.status_code == 422 and "nope" in response.json()["detail"]
    assert client.put("/api/v1/models/nope/capture", json={}, headers=operator()).status_code == 404
    assert (
        client.put("/api/v1/models/digits/capture", json={}, headers=bearer(token)).status_code
        == 401
    )
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        targets = [
            row.target
            for row in session.exec(select(AuditLog).where(AuditLog.route.contains("capture")))  # type: ignore[union-attr]
        ]
    assert "capture:digits@*" in targets and "capture:digits@1.0.0" in targets
