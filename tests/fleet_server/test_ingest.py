"""Ingest over a real broker (embedded amqtt and Mosquitto): real payloads from a separate paho
client end up as rows; duplicates and bad payloads are counted, and ingest keeps going."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from edgefleet.contract import (
    MAX_PAYLOAD_BYTES,
    Channel,
    Event,
    LatencySummary,
    ModelRef,
    State,
    Status,
    Telemetry,
    encode,
    topic,
)
from fleet_server.models import EventRow
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import (
    MqttProbe,
    make_settings,
    operator,
    running_app,
    unique_id,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def ingest_app(
    tmp_path: Path, mqtt_url: str, database_url: str
) -> Iterator[tuple[TestClient, Runtime, MqttProbe]]:
    settings = make_settings(tmp_path, database_url, broker_url=mqtt_url)
    with running_app(settings) as (client, runtime):
        probe = MqttProbe(mqtt_url)
        try:
            yield client, runtime, probe
        finally:
            probe.close()


def _settle(runtime: Runtime) -> dict[str, Any]:
    """Let retained messages from other tests (external broker) arrive, then take a baseline."""
    assert runtime.writer is not None
    received = -1
    while received != runtime.stats.received:
        received = runtime.stats.received
        wait_until(lambda: runtime.writer is not None and runtime.writer.flush(5), what="flush")
        import time

        time.sleep(0.3)
    return runtime.stats.snapshot()


def _wait_for(runtime: Runtime, baseline: dict[str, Any], count: int) -> dict[str, Any]:
    wait_until(lambda: runtime.stats.received - baseline["received"] >= count, what="messages")
    assert runtime.writer is not None and runtime.writer.flush(10)
    now = runtime.stats.snapshot()
    reasons = set(now["rejected"]) | set(baseline["rejected"])
    return {
        "received": now["received"] - baseline["received"],
        "stored": now["stored"] - baseline["stored"],
        "duplicates": now["duplicates"] - baseline["duplicates"],
        "rejected": {
            r: now["rejected"].get(r, 0) - baseline["rejected"].get(r, 0)
            for r in reasons
            if now["rejected"].get(r, 0) - baseline["rejected"].get(r, 0)
        },
    }


def _telemetry(device_id: str, seq: int, count: int = 10) -> Telemetry:
    return Telemetry(
        device_id=device_id,
        seq=seq,
        interval_s=10,
        model=ModelRef(name="digits", version="1.0.0"),
        inference_count=count,
        error_count=1,
        errors={"decode": 1},
        latency_ms=LatencySummary(p50=1.5, p95=3.0),
        system={"cpu_percent": 12.5},
        confidence_histogram=[0, 1, 9],
    )


def test_ingest_stores_dedupes_and_rejects(
    ingest_app: tuple[TestClient, Runtime, MqttProbe],
) -> None:
    client, runtime, probe = ingest_app
    device_id, stranger = unique_id(), unique_id("stranger")
    assert (
        client.post(
            "/api/v1/devices", json={"device_id": device_id}, headers=operator()
        ).status_code
        == 201
    )
    baseline = _settle(runtime)
    tele, state_topic = topic(device_id, Channel.TELEMETRY), topic(device_id, Channel.STATE)
    status_topic, events = topic(device_id, Channel.STATUS), topic(device_id, Channel.EVENTS)
    try:
        for seq in (1, 2, 3):
            probe.publish(tele, encode(_telemetry(device_id, seq, count=seq * 10)))
        probe.publish(tele, encode(_telemetry(device_id, 2)))  # a QoS 1 redelivery
        probe.publish(
            events,
            encode(Event(device_id=device_id, seq=4, event="update.committed", detail="ok")),
        )
        state = State(
            device_id=device_id,
            seq=5,
            phase="serving",
            running=ModelRef(name="digits", version="1.0.0"),
            agent_version="0.1.0",
            last_error="none yet",
        )
        probe.publish(state_topic, encode(state), retain=True)
        probe.publish(
            status_topic, encode(Status(device_id=device_id, status="online")), retain=True
        )
        # Hostile and broken input.
        probe.publish(topic(stranger, Channel.TELEMETRY), encode(_telemetry(stranger, 1)))
        probe.publish(tele, b"{not json")
        probe.publish(tele, b"\xff\xfe\x00binary")
        probe.publish(tele, json.dumps([1, 2, 3]).encode())
        # Just over the payload limit (the embedded broker itself cuts off far larger packets).
        probe.publish(tele, b"{" + b" " * MAX_PAYLOAD_BYTES + b"}")
        probe.publish(tele, json.dumps({"schema_version": 1, "device_id": device_id}).encode())
        probe.publish(tele, encode(_telemetry(device_id, 6)).replace(b'"seq":6', b'"seq":-6'))
        probe.publish(tele, encode(_telemetry(stranger, 7)))  # speaks for another device
        probe.publish("edgefleet/v1/UPPER/telemetry", encode(_telemetry(device_id, 8)))
        # Ingest keeps going after all of that.
        probe.publish(tele, encode(_telemetry(device_id, 9, count=90)))

        delta = _wait_for(runtime, baseline, 17)
        assert delta == {
            "received": 17,
            "stored": 7,  # telemetry 1, 2, 3, 9 + event 4 + state + status
            "duplicates": 1,
            "rejected": {
                "unknown_device": 1,
                "bad_json": 3,
                "oversized": 1,
                "schema": 2,
                "device_mismatch": 1,
                "bad_topic": 1,
            },
        }

        rows = client.get(f"/api/v1/devices/{device_id}/telemetry", headers=operator()).json()
        assert [r["seq"] for r in rows] == [9, 3, 2, 1]
        assert [r["inference_count"] for r in rows] == [90, 30, 20, 10]
        assert rows[0]["latency_ms"]["p95"] == 3.0 and rows[0]["errors"] == {"decode": 1}
        assert rows[0]["model"] == {"name": "digits", "version": "1.0.0"}
        assert (
            client.get(f"/api/v1/devices/{device_id}/telemetry?limit=2", headers=operator()).json()[
                1
            ]["seq"]
            == 3
        )

        device = client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()
        assert device["online"] is True and device["phase"] == "serving"
        assert device["running"] == {"name": "digits", "version": "1.0.0"}
        assert device["agent_version"] == "0.1.0" and device["last_error"] == "none yet"
        assert device["last_seen"] is not None
        assert device["last_telemetry"]["seq"] == 9
        assert device["last_telemetry"]["latency_ms"]["p50"] == 1.5

        assert runtime.engine is not None
        with Session(runtime.engine) as session:
            stored_events = session.exec(
                select(EventRow).where(col(EventRow.device_id) == device_id)
            ).all()
        assert [(e.seq, e.event, e.detail) for e in stored_events] == [
            (4, "update.committed", "ok")
        ]
        assert stored_events[0].ts.tzinfo is not None

        stats = client.get("/api/v1/ingest/stats", headers=operator()).json()
        assert stats["received"] >= 17 and stats["rejected"]["oversized"] >= 1
        assert client.get("/api/v1/ingest/stats").status_code == 401
        metrics = client.get("/metrics").text
        assert f"edgefleet_ingest_received_total {float(stats['received'])}" in metrics
    finally:
        probe.publish(state_topic, b"", retain=True)  # clear retained messages on the broker
        probe.publish(status_topic, b"", retain=True)


def test_state_moves_forward_and_liveness_follows_the_server_clock(
    tmp_path: Path, mqtt_url: str
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", broker_url=mqtt_url)
    with running_app(settings) as (client, runtime):
        probe = MqttProbe(mqtt_url)
        device_id = unique_id()
        client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
        baseline = _settle(runtime)
        state_topic, status_topic = (
            topic(device_id, Channel.STATE),
            topic(device_id, Channel.STATUS),
        )
        try:
            newer = State(device_id=device_id, seq=20, phase="probation", agent_version="2")
            older = State(device_id=device_id, seq=10, phase="idle", agent_version="1")
            probe.publish(state_topic, encode(newer))
            probe.publish(state_topic, encode(older))
            # The status received last wins, whatever the device's clock said (a Last Will
            # carries the time the agent connected, earlier than its "online").
            now = datetime.now(UTC)
            later, earlier = now + timedelta(hours=1), now - timedelta(hours=1)
            probe.publish(
                status_topic, encode(Status(device_id=device_id, status="offline", ts=later))
            )
            probe.publish(
                status_topic, encode(Status(device_id=device_id, status="online", ts=earlier))
            )
            delta = _wait_for(runtime, baseline, 4)
            assert (delta["stored"], delta["duplicates"]) == (3, 1)
            device = client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()
            assert device["phase"] == "probation" and device["agent_version"] == "2"
            assert device["online"] is True
        finally:
            probe.close()
