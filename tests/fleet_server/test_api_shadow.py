"""Shadow models from the server's side: an operator puts a shadow on a device (it rides in the
retained desired state, schema 3, beside the same serving model, and the device may fetch its
bundle), takes it off (the payload is a version-1 one again); ingest stores the devices'
ShadowReports with their telemetry, once; the model's shadow summary sums them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from edgefleet.contract import Channel, ContractError, ShadowReport, Telemetry, decode, topic
from fleet_server.messaging.writes import write_batch
from fleet_server.models import ShadowReportRow
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import MqttProbe, bearer, operator, server_mqtt_url, upload
from tests.fleet_server.sample_helpers import assign, register
from tests.fleet_server.test_api_capture import _last_desired
from tests.utils.artifacts import build_digits_artifact, bundle_of

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def digits_v2_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v2")
    artifact = build_digits_artifact(out / "digits-2.0.0", version="2.0.0", seed=1)
    return bundle_of(artifact, out / "digits-2.0.0.tar.gz")


def test_operator_puts_and_removes_a_shadow(
    app: tuple[TestClient, Runtime], digits_bundle: Path, digits_v2_bundle: Path
) -> None:
    client, runtime = app
    assert upload(client, digits_bundle).status_code == 201
    assert upload(client, digits_v2_bundle).status_code == 201
    device, token = register(client)
    idle, _ = register(client)
    assign(client, [device])
    path = f"/api/v1/devices/{device}/shadow"
    probe = MqttProbe(server_mqtt_url(runtime))
    try:
        probe.subscribe(topic(device, Channel.DESIRED))
        first = _last_desired(probe, device, 0)
        assert first.shadow is None and first.schema_version == 1

        # Hostile and wrong input: one clear refusal each, nothing stored or published.
        for body in (
            {"model": "digits", "version": "2.0.0", "sample_rate": 0},
            {"model": "digits", "version": "2.0.0", "sample_rate": 1.5},
            {"model": "digits", "version": "2.0.0", "cpu_budget": -1},
            {"model": "digits", "version": "2.0.0", "extra": 1},
            {"model": "../etc", "version": "2.0.0"},
            {"model": "digits"},
        ):
            assert client.put(path, json=body, headers=operator()).status_code == 422, body
        missing = {"model": "digits", "version": "9.9.9"}
        assert client.put(path, json=missing, headers=operator()).status_code == 404
        body = {"model": "digits", "version": "2.0.0", "sample_rate": 0.2, "cpu_budget": 0.5}
        assert client.put(path, json=body, headers=bearer(token)).status_code == 401
        assert (
            client.put("/api/v1/devices/ghost/shadow", json=body, headers=operator()).status_code
            == 404
        )
        no_model = client.put(f"/api/v1/devices/{idle}/shadow", json=body, headers=operator())
        assert no_model.status_code == 409
        assert client.delete(path, headers=operator()).status_code == 404  # none yet

        put = client.put(path, json=body, headers=operator())
        assert put.status_code == 200, put.text
        assert put.json()["version"] == "2.0.0" and put.json()["sample_rate"] == 0.2
        state = _last_desired(probe, device, first.seq)
        assert state.schema_version == 3 and state.shadow is not None
        assert (state.shadow.version, state.shadow.sample_rate, state.shadow.cpu_budget) == (
            "2.0.0",
            0.2,
            0.5,
        )
        assert state.shadow.url.endswith("/api/v1/models/digits/2.0.0/bundle")
        assert state.model is not None and state.model.version == "1.0.0"  # serving unchanged
        # The device may fetch its shadow's bundle, and no other version it is not assigned.
        got = client.get("/api/v1/models/digits/2.0.0/bundle", headers=bearer(token))
        assert got.status_code == 200 and len(got.content) == state.shadow.size

        assert client.delete(path, headers=operator()).status_code == 204
        cleared = _last_desired(probe, device, state.seq)
        assert cleared.shadow is None and cleared.model == state.model
        raw = json.loads(probe.received(topic(device, Channel.DESIRED))[-1][1])
        assert raw["schema_version"] == 1 and "shadow" not in raw  # a version-1 agent reads it
        got = client.get("/api/v1/models/digits/2.0.0/bundle", headers=bearer(token))
        assert got.status_code == 404
    finally:
        probe.close()


def _telemetry(device: str, seq: int, **report: object) -> Telemetry:
    return Telemetry(
        device_id=device,
        seq=seq,
        ts=T0 + timedelta(seconds=seq),
        interval_s=10,
        model={"name": "digits", "version": "1.0.0"},
        inference_count=100,
        shadow=ShadowReport.model_validate(
            {"model": {"name": "digits", "version": "2.0.0"}, **report}
        ),
    )


def test_ingest_stores_reports_once_and_the_summary_weights_them(
    app: tuple[TestClient, Runtime], digits_bundle: Path, digits_v2_bundle: Path
) -> None:
    client, runtime = app
    assert upload(client, digits_bundle).status_code == 201
    assert upload(client, digits_v2_bundle).status_code == 201
    pi = client.post(
        "/api/v1/devices",
        json={"device_id": "shadow-pi", "device_class": "pi4"},
        headers=operator(),
    )
    jetson = client.post(
        "/api/v1/devices",
        json={"device_id": "shadow-jet", "device_class": "jetson"},
        headers=operator(),
    )
    assert pi.status_code == 201 and jetson.status_code == 201
    common = {"serving_cpu_ms": 10.0, "shadow_cpu_ms": 20.0}
    items = [
        # 90 paired, 9 disagreed; p95 2 → 4 ms
        _telemetry("shadow-pi", 1, paired=90, disagreements=9, agreement=0.9, skipped=3,
                   serving_p50_ms=1.0, serving_p95_ms=2.0, shadow_p50_ms=2.0, shadow_p95_ms=4.0,
                   errors={"inference": 1}, **common),
        # 10 paired, all agreed; p95 1 → 1 ms
        _telemetry("shadow-jet", 1, paired=10, disagreements=0, agreement=1.0,
                   serving_p50_ms=1.0, serving_p95_ms=1.0, shadow_p50_ms=1.0, shadow_p95_ms=1.0,
                   **common),
        # a failed load: nothing paired, an error
        _telemetry("shadow-jet", 2, paired=0, errors={"load_failed": 1}),
    ]  # fmt: skip
    assert runtime.engine is not None
    stamped = [(t, T0) for t in items]
    assert write_batch(engine=runtime.engine, items=stamped).stored == 3
    again = write_batch(engine=runtime.engine, items=stamped)  # a QoS 1 redelivery
    assert again.stored == 0 and again.duplicates == 3
    with Session(runtime.engine) as session:
        rows = session.exec(select(ShadowReportRow)).all()
        assert len(rows) == 3
        first = next(r for r in rows if r.device_id == "shadow-pi")
        assert (first.model_name, first.model_version, first.paired) == ("digits", "2.0.0", 90)
        assert first.figures["serving"] == {"name": "digits", "version": "1.0.0"}
        assert first.figures["task"] is None and first.figures["shadow_p95_ms"] == 4.0

    summary = client.get("/api/v1/models/digits/2.0.0/shadow", headers=operator())
    assert summary.status_code == 200, summary.text
    fleet = summary.json()["fleet"]
    assert (fleet["devices"], fleet["reports"], fleet["paired"]) == (2, 3, 100)
    assert fleet["agreement"] == pytest.approx(0.91)  # paired-weighted, not (0.9 + 1) / 2
    assert fleet["serving_p95_ms"] == pytest.approx((90 * 2 + 10 * 1) / 100)
    assert fleet["shadow_p95_ms"] == pytest.approx((90 * 4 + 10 * 1) / 100)
    assert fleet["latency_ratio_p95"] == pytest.approx(3.7 / 1.9)
    assert fleet["cpu_ratio"] == pytest.approx(2.0)
    assert fleet["errors"] == {"inference": 1, "load_failed": 1} and fleet["skipped"] == 3
    classes = summary.json()["device_classes"]
    assert set(classes) == {"pi4", "jetson"}
    assert classes["pi4"]["agreement"] == pytest.approx(0.9)
    assert classes["jetson"]["agreement"] == 1.0 and classes["jetson"]["reports"] == 2
    none = client.get("/api/v1/models/digits/1.0.0/shadow", headers=operator()).json()
    assert none["fleet"]["reports"] == 0 and none["fleet"]["agreement"] is None
    assert client.get("/api/v1/models/digits/7.0.0/shadow", headers=operator()).status_code == 404
    assert client.get("/api/v1/models/digits/2.0.0/shadow").status_code == 401

    # A version-2 telemetry (no shadow) is stored as before; one smuggling a report is refused.
    device, _ = register(client)
    raw = json.dumps(
        {
            "schema_version": 2,
            "kind": "telemetry",
            "device_id": device,
            "seq": 1,
            "ts": "2026-12-07T09:00:00Z",
            "interval_s": 10,
            "model": None,
            "inference_count": 0,
        }
    ).encode()
    payload = decode(Channel.TELEMETRY, raw, device_id=device)
    assert isinstance(payload, Telemetry) and payload.shadow is None
    assert write_batch(engine=runtime.engine, items=[(payload, T0)]).stored == 1
    with Session(runtime.engine) as session:
        assert len(session.exec(select(ShadowReportRow)).all()) == 3  # none added
    # A version-2 payload that smuggles a shadow report is refused.
    data = {**json.loads(raw), "shadow": {"model": {"name": "a", "version": "1"}, "paired": 0}}
    with pytest.raises(ContractError, match="shadow needs schema_version 3"):
        decode(Channel.TELEMETRY, json.dumps(data).encode(), device_id=device)
