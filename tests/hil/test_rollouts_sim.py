"""Rollouts end to end with simulated devices on a real broker and a real server: a good version
goes canary → batches → completed (across a server restart); a 3× slower version is stopped at
the canary and every touched device is rolled back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hil.device import Behaviour
from hil.fleet import FleetSimulator
from tests.fleet_server.client.conftest import run_fleet
from tests.fleet_server.helpers import wait_until
from tests.utils.artifacts import signed_digits_bundles
from tests.utils.server import live_server

pytestmark = pytest.mark.integration

N = 20
SPEC: dict[str, Any] = {
    "strategy": {"canary_percent": 10, "batches": [50, 100], "soak_s": 1.5, "update_timeout_s": 60},
    "gates": {
        "error_rate": {"min_samples": 20},
        "latency_p95_ratio": {"min_samples": 2},
        "confidence_shift": {"min_samples": 20},
    },
}


@contextmanager
def _fleet_on(
    tmp_path: Path, mqtt_url: str, behaviour: Behaviour
) -> Iterator[tuple[Any, Any, FleetSimulator, str]]:
    from fleet_server.client.api import FleetClient

    bundles, key = signed_digits_bundles(tmp_path / "bundles", ["1.0.0", "2.0.0"])
    with live_server(
        tmp_path, broker_url=mqtt_url, rollout_tick_s=0.2, trusted_keys=[key]
    ) as server:
        client = FleetClient(server.url, server.token)
        for bundle in bundles:
            client.push_model(bundle)
        tag = f"ro-{time.time_ns() % 10**9}"
        devices = []
        for i in range(N):
            created = client.add_device(
                f"{tag}-{i:02d}", device_class="rpi4" if i % 2 else "rpi5", tags=[tag]
            )
            devices.append((str(created["device_id"]), str(created["token"])))
        fleet = FleetSimulator(
            server.broker_url, server.url, devices, behaviour=behaviour, telemetry_interval_s=0.3
        )
        fleet.start(connect_timeout=30)
        try:
            client.assign("digits", "1.0.0", tag=tag)
            wait_until(
                lambda: fleet.stats().running.get("digits@1.0.0") == N,
                30,
                "everyone on 1.0.0",
                every=0.2,
            )
            yield server, client, fleet, tag
        finally:
            fleet.stop()
            client.close()


def test_a_good_version_is_promoted_through_every_stage_across_a_restart(
    tmp_path: Path, mqtt_url: str
) -> None:
    from fleet_server.client.api import FleetClient

    behaviour = Behaviour(latency_ms=2.0, per_version={"2.0.0": (2.1, 0.0)})
    with _fleet_on(tmp_path, mqtt_url, behaviour) as (server, client, fleet, tag):
        rollout = client.create_rollout(
            {"model": "digits", "version": "2.0.0", "selector": {"tags": [tag]}, **SPEC}
        )
        rid = int(rollout["id"])
        wait_until(
            lambda: client.get_rollout(rid)["stage"] >= 1, 30, "the canary to pass", every=0.2
        )
        # Restart the server mid-rollout (in batch-1's soak): a new process state on the same
        # database and broker. Wait until batch-1's devices have their bundle first: a download
        # cut by the restart is a failed update (the agent's too), which the success-rate gate
        # rightly counts (once in a CI run: success_rate 0.6667 (n=3), an abort). Downloads that
        # survive a server outage by retrying are issue #16's.
        wait_until(
            lambda: fleet.stats().running.get("digits@2.0.0", 0) >= N // 2,
            30,
            "batch-1 (50 %) to run 2.0.0",
            every=0.2,
        )
        server.stop()
        with live_server(tmp_path, broker_url=mqtt_url, rollout_tick_s=0.2) as again:
            with FleetClient(again.url, again.token) as client2:
                code = run_fleet(
                    ["fleet", "rollouts", "watch", str(rid), "--timeout", "60", "--interval",
                     "0.5", "--server", again.url, "--token", again.token]
                )  # fmt: skip
                assert code == 0, client2.get_rollout(rid)
                report = client2.rollout_report(rid)
        assert fleet.stats().running.get("digits@2.0.0") == N
        actions = [(d["action"], d["stage"]) for d in report["decisions"]]
        for stage in (0, 1, 2):
            assert actions.count(("stage_passed", stage)) == 1, actions
        assert actions.count(("stage_started", 1)) == 1 and actions.count(("stage_started", 2)) == 1
        assert actions[-1] == ("completed", 2)
        diff = report["differential"]
        assert set(diff["latency_by_class"]) == {"rpi4", "rpi5"}
        for row in diff["latency_by_class"].values():
            assert row["p95_ratio"] == pytest.approx(1.05, abs=0.15)


def test_a_slow_version_is_stopped_at_the_canary_and_rolled_back(
    tmp_path: Path, mqtt_url: str
) -> None:
    behaviour = Behaviour(latency_ms=2.0, per_version={"2.0.0": (6.0, 0.0)})
    with _fleet_on(tmp_path, mqtt_url, behaviour) as (_server, client, fleet, tag):
        rollout = client.create_rollout(
            {"model": "digits", "version": "2.0.0", "selector": {"tags": [tag]}, **SPEC}
        )
        rid = int(rollout["id"])
        wait_until(
            lambda: client.get_rollout(rid)["state"] == "aborted", 45, "the abort", every=0.2
        )
        report = client.rollout_report(rid)
        failed = next(d for d in report["decisions"] if d["action"] == "gate_failed")
        assert "latency_p95_ratio" in failed["reason"]
        gate = next(g for g in failed["evidence"]["gates"] if g["name"] == "latency_p95_ratio")
        assert gate["value"] == pytest.approx(3.0, rel=0.25)
        statuses = [d["status"] for d in report["devices"]]
        assert statuses.count("reverted") == 2  # the canary: 10 % of 20
        assert statuses.count("skipped") == N - 2
        wait_until(
            lambda: fleet.stats().running.get("digits@1.0.0") == N,
            20,
            "everyone back on 1.0.0",
            every=0.2,
        )
        devices = client.list_devices()
        assert {(d["desired"] or {}).get("version") for d in devices if tag in d["tags"]} == {
            "1.0.0"
        }
