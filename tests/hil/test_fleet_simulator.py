"""The fleet simulator against a real server: devices connect, take a rollout, report telemetry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hil.device import Behaviour
from hil.fleet import FleetSimulator
from tests.utils.artifacts import build_digits_artifact
from tests.utils.server import live_server


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.integration
def test_simulated_fleet_takes_a_rollout_and_reports(tmp_path: Path, mqtt_url: str) -> None:
    from fleet_server.client.api import FleetClient

    with live_server(tmp_path, broker_url=mqtt_url) as server:
        client = FleetClient(server.url, server.token)
        client.push_model(build_digits_artifact(tmp_path / "art", version="2.0.0"))
        prefix = f"sim-{time.time_ns() % 10**8}"
        devices = []
        for i in range(40):
            created = client.add_device(f"{prefix}-{i:03d}", tags=[prefix])
            devices.append((str(created["device_id"]), str(created["token"])))
        fleet = FleetSimulator(
            server.broker_url,
            server.url,
            devices,
            behaviour=Behaviour(latency_ms=2.0),
            telemetry_interval_s=1.0,
        )
        fleet.start(connect_timeout=30)
        try:
            assert _wait(lambda: all(d["online"] for d in client.list_devices()), 15)
            client.assign("digits", "2.0.0", tag=prefix)
            assert _wait(lambda: fleet.stats().updates_committed == 40, 30), fleet.stats()
            assert fleet.stats().updates_failed == 0

            def all_reported() -> bool:
                rows = client.list_devices()
                return all(
                    (d.get("running") or {}).get("version") == "2.0.0"
                    and ((d.get("last_telemetry") or {}).get("model") or {}).get("version")
                    == "2.0.0"
                    for d in rows
                )

            assert _wait(all_reported, 20)
            row = client.device_telemetry(devices[0][0], limit=1)[0]
            assert row["latency_ms"]["p50"] == pytest.approx(2.0, rel=0.5)
        finally:
            fleet.stop()
            client.close()
