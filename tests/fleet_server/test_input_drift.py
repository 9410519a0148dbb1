"""Input drift end to end on the real broker (Mosquitto) and SQLite / PostgreSQL: simulated
devices publish schema 2 telemetry (input histograms on the manifest's bins, class counts);
ingest stores it; the drift job sums it into input buckets per segment and judges it against the
manifest's reference_stats. Over the same intervals, a fleet fed darkened images raises
input_psi / input_js / input_class_shift alerts (fleet-wide and for its tag) within a few
intervals, and a fleet fed unshifted images raises none."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from edgefleet.contract import Channel, InputStats, ModelRef, Telemetry, encode, topic
from fleet_server.models import DriftAlert, DriftStatus, ModelVersion, TelemetryRow
from fleet_server.models.types import utcnow
from fleet_server.runtime import Runtime
from fleet_server.services.drift import DriftConfig, DriftJob
from tests.conftest import external_mqtt_url
from tests.fleet_server.helpers import MqttProbe, make_settings, operator, running_app, unique_id
from tests.utils import inputs

pytestmark = pytest.mark.integration

PER_MESSAGE = 20  # inputs sampled per telemetry interval per device
DEVICES = 4  # per fleet
ROUNDS = 6
CONFIG = DriftConfig.model_validate(
    {
        "bucket_s": 1,
        "window_s": 3600,
        "reference_s": 3600,
        "settle_s": 0,
        "input_psi": {"min_samples": 100},
        "input_js": {"min_samples": 100},
        "input_class_shift": {"min_samples": 100},
    }
)


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, Runtime, MqttProbe]]:
    url = external_mqtt_url()
    settings = make_settings(tmp_path, database_url, broker_url=url, drift={"enabled": False})
    with running_app(settings) as (client, runtime):
        probe = MqttProbe(url)
        try:
            yield client, runtime, probe
        finally:
            probe.close()


def _model_version(runtime: Runtime, version: str, reference: dict[str, object]) -> None:
    assert runtime.engine is not None
    manifest = {"name": "digits", "version": version, "labels": inputs.LABELS,
                "reference_stats": reference}  # fmt: skip
    with Session(runtime.engine) as session:
        session.add(
            ModelVersion(
                name="digits",
                version=version,
                format="onnx",
                precision="fp32",
                task="classification",
                sha256="0" * 64,
                size=1,
                signed=False,
                storage_key=f"digits/{version}",
                manifest=manifest,
            )  # fmt: skip
        )
        session.commit()


def test_shifted_inputs_raise_input_drift_and_unshifted_ones_do_not(
    app: tuple[TestClient, Runtime, MqttProbe],
) -> None:
    client, runtime, probe = app
    assert runtime.engine is not None and runtime.writer is not None
    rng = np.random.default_rng(13)
    reference = inputs.reference_stats(rng)
    _model_version(runtime, "1.0.0", reference)  # the steady fleet's version
    _model_version(runtime, "1.0.1", reference)  # the shifted fleet's (same reference)
    tag = unique_id("tag")[:20]
    fleets: dict[str, list[str]] = {"1.0.0": [], "1.0.1": []}
    for version, devices in fleets.items():
        for _ in range(DEVICES):
            device_id = unique_id()
            body = {"device_id": device_id, "tags": [f"{tag}-{version.replace('.', '')}"]}
            response = client.post("/api/v1/devices", json=body, headers=operator())
            assert response.status_code == 201, response.text
            devices.append(device_id)
    job = DriftJob(engine=runtime.engine, config=CONFIG)
    fired: dict[str, int] = {}  # detector → first round it was in drift (shifted fleet)
    published = 0
    for round_no in range(1, ROUNDS + 1):
        for version, devices in fleets.items():
            shift: inputs.Shift = "darken" if version == "1.0.1" else "none"
            shares = [0.1, 0.1, 0.3, 0.5] if version == "1.0.1" else None
            for device_id in devices:
                stats = inputs.input_stats(rng, PER_MESSAGE, shift)
                message = Telemetry(
                    device_id=device_id, seq=round_no, interval_s=1.0,
                    model=ModelRef(name="digits", version=version),
                    inference_count=PER_MESSAGE * 5, inputs=InputStats(**stats),
                    class_counts=inputs.class_counts(rng, PER_MESSAGE * 5, shares),
                )  # fmt: skip
                probe.publish(topic(device_id, Channel.TELEMETRY), encode(message))
                published += 1
        _wait_stored(runtime, published)
        time.sleep(0.05)  # received_at strictly before the job's "now"
        job.run_once(now=utcnow())
        with Session(runtime.engine) as session:
            for status in session.exec(
                select(DriftStatus).where(DriftStatus.model_version == "1.0.1")
            ):
                if status.status == "drift":
                    fired.setdefault(status.detector, round_no)
    with Session(runtime.engine) as session:
        alerts = list(session.exec(select(DriftAlert)))
        statuses = list(session.exec(select(DriftStatus)))
    steady = [a.detector for a in alerts if a.model_version == "1.0.0"]
    shifted = sorted({a.detector for a in alerts if a.model_version == "1.0.1"})
    print(f"\nshifted fleet: first drift round per detector {fired}")  # noqa: T201
    print(f"steady fleet: {len(steady)} alerts over {ROUNDS} rounds")  # noqa: T201
    assert steady == []
    steady_verdicts = {
        s.detector: s.status
        for s in statuses
        if s.model_version == "1.0.0" and s.detector.startswith("input_")
    }
    assert set(steady_verdicts.values()) == {"ok"}, steady_verdicts
    segment = f"[tag={tag}-101]"
    for name in ("input_psi", "input_js", "input_class_shift"):
        assert name in shifted and name + segment in shifted, shifted
        assert fired[name] <= 3, fired  # within a few intervals
    assert "input_psi[tag=" + tag + "-100]" in steady_verdicts


def _wait_stored(runtime: Runtime, count: int) -> None:
    assert runtime.engine is not None and runtime.writer is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runtime.writer.flush(5)
        with Session(runtime.engine) as session:
            stored = len(session.exec(select(TelemetryRow.seq)).all())
        if stored >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"only {stored} of {count} telemetry rows stored")
