"""Rollouts with real agent processes: a real server (SQLite, its embedded broker with device
auth), three ``edgefleet agent run`` processes serving real images with signed models.

A good version goes canary → everyone and is committed by every agent; a version that passes
its self-test but is far slower is stopped at the canary — by the fleet's latency gate or by the
canary agent's own probation (then the success gate) — the rollout aborts, and every device
ends on the good version.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.probation_models import slow
from tests.agent.test_agent_process import AgentProcess
from tests.fleet_server.helpers import device_mqtt_url, wait_until
from tests.utils.artifacts import bundle_of, digits_images, sign_artifact, signed_digits_bundles
from tests.utils.server import live_server

pytestmark = pytest.mark.integration

GATES: dict[str, Any] = {
    "error_rate": {"min_samples": 20},
    "latency_p95_ratio": {"min_samples": 2, "max_ratio": 3.0},
    "confidence_shift": {"min_samples": 20},
}


def _config(
    path: Path, *, device_id: str, token: str, server: Any, key: Path, images: Path
) -> Path:
    data = path.parent / f"data-{device_id}"
    path.write_text(
        f"""
device_id = "{device_id}"
server_url = "{server.url}"
token = "{token}"
data_dir = "{data}"
trusted_keys = ["{key}"]

[mqtt]
url = "{device_mqtt_url(server.runtime, device_id, token)}"
keepalive = 10

[telemetry]
interval_s = 0.5

[engine]
threads = 1

[input]
type = "folder"
path = "{images}"
pattern = "*.png"
loop = true
rate_hz = 40.0

[probation]
inferences = 40
max_s = 30
latency_floor_ms = 4.0
"""
    )
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Any, Any, list[str], str]]:
    from fleet_server.client.api import FleetClient

    bundles, key = signed_digits_bundles(tmp_path / "bundles", ["1.0.0", "2.0.0"])
    slow_artifact = sign_artifact(
        slow(tmp_path / "slow", version="3.0.0", depth=120),
        (tmp_path / "bundles" / "signing.pem").read_bytes(),
    )
    bundles.append(bundle_of(slow_artifact, tmp_path / "bundles" / "digits-3.0.0.tar.gz"))
    images = tmp_path / "images"
    digits_images(images, 8)
    agents: list[AgentProcess] = []
    with live_server(tmp_path, rollout_tick_s=0.25, trusted_keys=[key]) as server:
        client = FleetClient(server.url, server.token)
        try:
            for bundle in bundles:
                client.push_model(bundle)
            tag = f"e2e-{time.time_ns() % 10**8}"
            ids = []
            for i in range(3):
                created = client.add_device(f"{tag}-{i}", device_class="x86_64", tags=[tag])
                device_id, token = str(created["device_id"]), str(created["token"])
                ids.append(device_id)
                config = _config(
                    tmp_path / f"{device_id}.toml",
                    device_id=device_id,
                    token=token,
                    server=server,
                    key=key,
                    images=images,
                )
                agents.append(AgentProcess(config))
            client.assign("digits", "1.0.0", tag=tag)
            wait_until(
                lambda: _running(client, tag) == {"1.0.0": 3},
                60,
                "every agent on 1.0.0",
                every=0.25,
            )
            yield server, client, ids, tag
        finally:
            for agent in agents:
                agent.kill()
            client.close()


def _running(client: Any, tag: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for device in client.list_devices():
        if tag in device["tags"]:
            version = (device.get("running") or {}).get("version", "-")
            counts[version] = counts.get(version, 0) + 1
    return counts


def test_real_agents_take_a_good_version_and_refuse_a_slow_one(
    fleet: tuple[Any, Any, list[str], str],
) -> None:
    _server, client, _ids, tag = fleet
    good = client.create_rollout(
        {
            "model": "digits",
            "version": "2.0.0",
            "selector": {"tags": [tag]},
            "strategy": {"canary_percent": 30, "batches": [100], "soak_s": 1},
            "gates": GATES,
        }
    )
    rid = int(good["id"])
    wait_until(
        lambda: client.get_rollout(rid)["state"] != "running", 90, "the rollout to end", every=0.25
    )
    report = client.rollout_report(rid)
    assert report["rollout"]["state"] == "completed", (
        report["rollout"].get("state"),
        report["rollout"].get("reason"),
        [(d["action"], d.get("reason")) for d in report["decisions"]][-4:],
    )
    actions = [(d["action"], d["stage"]) for d in report["decisions"]]
    assert ("stage_passed", 0) in actions and actions[-1] == ("completed", 1), actions
    passed = next(d for d in report["decisions"] if d["action"] == "stage_passed")
    gates = {g["name"]: g["status"] for g in passed["evidence"]["gates"]}
    assert gates["success_rate"] == "pass" and gates["latency_p95_ratio"] == "pass", gates
    # A real baseline either way: the control group, or (when the canary had served 1.0.0 long
    # enough before its update, as on a loaded machine) its own pre-update telemetry.
    assert passed["evidence"]["evidence"]["baseline"] in ("control", "pre-update"), passed
    # Committed (the event) comes just before the state message that says so.
    wait_until(
        lambda: _running(client, tag) == {"2.0.0": 3}, 15, "every agent reporting 2.0.0", every=0.25
    )

    bad = client.create_rollout(
        {
            "model": "digits",
            "version": "3.0.0",
            "selector": {"tags": [tag]},
            "strategy": {"canary_percent": 30, "batches": [100], "soak_s": 1},
            "gates": GATES,
        }
    )
    bid = int(bad["id"])
    wait_until(lambda: client.get_rollout(bid)["state"] == "aborted", 90, "the abort", every=0.25)
    report = client.rollout_report(bid)
    failed = next(d for d in report["decisions"] if d["action"] == "gate_failed")
    # Whichever sees it first stops it: the fleet's latency gate (the canary's telemetry during
    # its probation) or the success gate (the canary's own probation rolled it back).
    assert "latency_p95_ratio" in failed["reason"] or "success_rate" in failed["reason"], failed
    gates = {g["name"]: g for g in failed["evidence"]["gates"]}
    if gates["latency_p95_ratio"]["status"] == "fail":
        assert gates["latency_p95_ratio"]["value"] > 3.0
    canary = [d for d in report["devices"] if d["status"] == "reverted"]
    assert len(canary) == 1
    assert [d["status"] for d in report["devices"]].count("skipped") == 2
    wait_until(
        lambda: _running(client, tag) == {"2.0.0": 3}, 30, "every agent on 2.0.0", every=0.25
    )
    desired = {
        (d["desired"] or {}).get("version") for d in client.list_devices() if tag in d["tags"]
    }
    assert desired == {"2.0.0"}
