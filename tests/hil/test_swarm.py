"""The light simulator (hil.swarm): 200 devices in 2 processes take a staged rollout through the
real server, the external Mosquitto and PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hil.device import Behaviour
from hil.swarm import Swarm
from tests.conftest import external_mqtt_url, fresh_postgres_database
from tests.fleet_server.helpers import wait_until
from tests.utils.artifacts import signed_digits_bundles
from tests.utils.server import live_server

pytestmark = pytest.mark.integration

N = 200


def test_two_hundred_light_devices_take_a_staged_rollout(tmp_path: Path) -> None:
    from fleet_server.client.api import FleetClient

    mqtt_url = external_mqtt_url()
    bundles, key = signed_digits_bundles(tmp_path / "bundles", ["1.0.0", "2.0.0"])
    with (
        fresh_postgres_database() as database_url,
        live_server(
            tmp_path,
            broker_url=mqtt_url,
            database_url=database_url,
            rollout_tick_s=0.2,
            trusted_keys=[key],
        ) as server,
        FleetClient(server.url, server.token, timeout=60) as client,
    ):
        for bundle in bundles:
            client.push_model(bundle)
        tag = f"swarm-{time.time_ns() % 10**9}"
        devices = []
        for i in range(N):
            created = client.add_device(f"{tag}-{i:03d}", tags=[tag])
            devices.append((str(created["device_id"]), str(created["token"])))
        swarm = Swarm(
            server.broker_url,
            server.url,
            devices,
            behaviour=Behaviour(latency_ms=2.0, per_version={"2.0.0": (2.1, 0.0)}),
            telemetry_interval_s=0.5,
            processes=2,
        )
        swarm.start(connect_timeout=60)
        try:
            wait_until(
                lambda: sum(d["online"] for d in client.list_devices()) == N, 30, "all online"
            )
            client.assign("digits", "1.0.0", tag=tag)
            wait_until(
                lambda: swarm.stats().running.get("digits@1.0.0") == N,
                60,
                "everyone on 1.0.0",
                every=0.3,
            )
            rollout = client.create_rollout(
                {
                    "model": "digits",
                    "version": "2.0.0",
                    "selector": {"tags": [tag]},
                    "strategy": {"canary_percent": 5, "batches": [100], "soak_s": 1.0},
                    "gates": {
                        "error_rate": {"min_samples": 50},
                        "latency_p95_ratio": {"min_samples": 5},
                        "confidence_shift": {"min_samples": 50},
                    },
                }
            )
            rid = int(rollout["id"])
            try:
                wait_until(
                    lambda: client.get_rollout(rid)["state"] in {"completed", "aborted", "failed"},
                    90,
                    "the rollout to finish",
                    every=0.3,
                )
            except AssertionError as e:
                raise AssertionError(f"{e}\n{_where(client, rid, swarm)}") from None
            report = client.rollout_report(rid)
            assert report["rollout"]["state"] == "completed", report["decisions"][-3:]
            stats = swarm.stats()
            assert stats.running.get("digits@2.0.0") == N, stats.running
            assert stats.updates_failed == 0
            assert stats.updates_committed == 2 * N
            # The server saw it too: every device reports 2.0.0 and sent telemetry on it.
            rows = [d for d in client.list_devices() if tag in d.get("tags", [])]
            assert len(rows) == N
            assert all((d.get("running") or {}).get("version") == "2.0.0" for d in rows)
            usage = swarm.usage()
            assert usage.cpu_s > 0 and usage.max_rss_mb > 0
        finally:
            swarm.stop()
        # The devices emptied their retained topics on the way out: a shared broker is not left
        # holding three retained messages per simulated device.
        assert _retained(mqtt_url, [f"edgefleet/v1/{d}/+" for d, _t in devices[:20]]) == []


def _where(client: Any, rid: int, swarm: Swarm) -> str:
    """Where a stuck rollout is: its stage, last gates, member statuses and the devices' view."""
    row = client.get_rollout(rid)
    report = client.rollout_report(rid)
    statuses = Counter(str(d["status"]) for d in report["devices"])
    gates = [
        (g.get("name"), g.get("status"), str(g.get("detail"))[:160])
        for g in ((row.get("last_evaluation") or {}).get("gates") or [])
    ]
    stats = swarm.stats()
    return (
        f"state {row['state']} stage {row['stage']} reason {row.get('reason')!r}; "
        f"members {dict(statuses)}; gates {gates}; decisions {report['decisions'][-3:]}; "
        f"swarm running {stats.running} connected {stats.connected} "
        f"committed {stats.updates_committed} failed {stats.updates_failed}"
    )


def _retained(url: str, filters: list[str]) -> list[str]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgefleet.mqtt import BrokerAddress

    address = BrokerAddress.from_url(url)
    seen: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"retained-{time.time_ns()}")
    client.on_message = lambda _c, _u, msg: seen.append(msg.topic) if msg.payload else None
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        for topic_filter in filters:
            client.subscribe(topic_filter, qos=1)
        time.sleep(2)  # retained messages arrive right after the SUBACK
    finally:
        client.disconnect()
        client.loop_stop()
    return seen
