"""Drift end to end: simulated devices on a real broker and a real server. The fleet serves a
confident model long enough to form its reference, then its inputs change (top-1 confidence
falls from ~0.9 to ~0.35): the drift job opens an alert and calls a signed webhook once; when
the inputs are back to normal the alert closes."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.device import Behaviour
from hil.fleet import FleetSimulator
from tests.fleet_server.helpers import wait_until
from tests.utils.artifacts import signed_digits_bundles
from tests.utils.server import live_server
from tests.utils.webhook import Received, webhook_server

pytestmark = pytest.mark.integration

N = 10
SECRET = "hook-secret"  # noqa: S105 - a test webhook's secret
#: Compressed time: 1 s buckets, a 4 s reference, a 3 s window, a run every 0.5 s.
DRIFT = {
    "interval_s": 0.5,
    "bucket_s": 1,
    "reference_s": 4,
    "window_s": 3,
    "settle_s": 0.3,
    "confidence_shift": {"min_samples": 200},
    "confidence_drop": {"min_samples": 200},
    "error_rate_rise": {"min_samples": 200},
}


def _signed(headers: dict[str, str], body: bytes) -> int:
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(headers.get("x-edgefleet-signature", ""), f"sha256={expected}")
    return 202 if ok else 401


@pytest.fixture
def hook() -> Iterator[tuple[str, Received]]:
    with webhook_server(_signed) as server:
        yield server


def _verdicts(client: Any) -> dict[str, str]:
    report = client.drift()
    return {
        s["detector"]: s["status"]
        for s in report["statuses"]
        if (s["model"], s["version"]) == ("digits", "1.0.0")
    }


def test_changed_inputs_open_an_alert_trigger_retraining_and_close(
    tmp_path: Path, mqtt_url: str, hook: tuple[str, Received]
) -> None:
    from fleet_server.client.api import FleetClient

    url, received = hook

    def bodies() -> list[bytes]:
        """The bodies of the correctly signed calls."""
        return [body for headers, body in received if _signed(headers, body) == 202]

    bundles, _key = signed_digits_bundles(tmp_path / "bundles", ["1.0.0"])
    retrain = {"type": "webhook", "url": url, "secret": SECRET}
    with live_server(tmp_path, broker_url=mqtt_url, drift=DRIFT, retrain=retrain) as server:
        client = FleetClient(server.url, server.token)
        client.push_model(bundles[0])
        tag = f"dr-{time.time_ns() % 10**9}"
        devices = []
        for i in range(N):
            created = client.add_device(f"{tag}-{i:02d}", tags=[tag])
            devices.append((str(created["device_id"]), str(created["token"])))
        normal = Behaviour(confidence=0.9, inferences_per_s=100)
        fleet = FleetSimulator(
            server.broker_url, server.url, devices, behaviour=normal, telemetry_interval_s=0.3
        )
        fleet.start(connect_timeout=30)
        try:
            client.assign("digits", "1.0.0", tag=tag)
            wait_until(
                lambda: fleet.stats().running.get("digits@1.0.0") == N, 30, "on 1.0.0", every=0.2
            )
            wait_until(
                lambda: set(_verdicts(client).values()) == {"ok"},
                30,
                "reference formed, every detector ok",
                every=0.2,
            )
            assert received == []
            for device in fleet.devices:  # the world changes: the model is unsure now
                device.behaviour = dataclasses.replace(normal, confidence=0.35)
            wait_until(
                lambda: _verdicts(client).get("confidence_shift") == "drift",
                30,
                "confidence_shift: drift",
                every=0.2,
            )
            wait_until(lambda: len(bodies()) == 1, 10, "one webhook call", every=0.1)
            sent = json.loads(bodies()[0])
            assert (sent["model"], sent["version"]) == ("digits", "1.0.0")
            alerts = client.drift()["alerts"]
            assert any(a["trigger_status"] == "sent" for a in alerts)
            assert all(a["closed_at"] is None for a in alerts)
            for device in fleet.devices:  # back to normal
                device.behaviour = normal
            wait_until(
                lambda: all(a["closed_at"] for a in client.drift()["alerts"]),
                30,
                "alerts closed",
                every=0.2,
            )
            assert len(bodies()) == len(received) == 1  # one trigger (cooldown), signed
        finally:
            fleet.stop()
            client.close()
