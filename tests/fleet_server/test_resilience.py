"""The server rides out a broker outage: not ready while it lasts, assignments are kept in the
database, and after reconnecting ingest resumes and desired state reaches the broker again."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.contract import Channel, DesiredState, Telemetry, encode, topic
from fleet_server.broker import EmbeddedBroker
from fleet_server.services.mqtt_auth import DatabaseAuthenticator
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


def test_broker_outage_and_recovery(tmp_path: Path, digits_bundle: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    with running_app(settings) as (client, runtime):
        device_id = unique_id()
        client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
        assert upload(client, digits_bundle).status_code == 201
        assert runtime.broker is not None
        runtime.broker.stop()
        wait_until(lambda: client.get("/readyz").status_code == 503, what="not ready")
        assert client.get("/readyz").json()["broker"] is False
        assert client.get("/healthz").status_code == 200

        assigned = client.post(
            "/api/v1/assignments",
            json={"model": "digits", "version": "1.0.0", "device_ids": [device_id]},
            headers=operator(),
        )
        assert assigned.status_code == 200, assigned.text

        assert runtime.engine is not None and runtime.mqtt_credential is not None
        replacement = EmbeddedBroker(  # as secured as the one the runtime started
            host="127.0.0.1",
            port=settings.embedded_broker_port,
            authenticator=DatabaseAuthenticator(
                engine=runtime.engine, server=runtime.mqtt_credential
            ),
        )
        replacement.start(timeout=10)
        runtime.broker = replacement  # the runtime stops it at shutdown
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, what="ready")

        probe = MqttProbe(server_mqtt_url(runtime))
        try:
            desired_topic = topic(device_id, Channel.DESIRED)
            probe.subscribe(desired_topic)
            wait_until(lambda: bool(probe.received(desired_topic)), what="desired state")
            state = DesiredState.model_validate_json(probe.received(desired_topic)[-1][1])
            assert state.seq == 1 and state.model is not None

            before = runtime.stats.stored
            telemetry = Telemetry(
                device_id=device_id, seq=1, interval_s=1, model=None, inference_count=3
            )
            probe.publish(topic(device_id, Channel.TELEMETRY), encode(telemetry))
            wait_until(lambda: runtime.stats.stored > before, what="telemetry stored")
        finally:
            probe.close()
        rows = client.get(f"/api/v1/devices/{device_id}/telemetry", headers=operator()).json()
        assert [r["inference_count"] for r in rows] == [3]
