"""Server replicas on one PostgreSQL database and one Mosquitto: MQTT v5 shared subscriptions
split telemetry ingest between them, retained state/status reach every replica, and one
replica at a time holds the driver lease (another takes over when it dies)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from edgefleet.contract import Channel, Status, encode, topic
from fleet_server.client.api import FleetClient
from fleet_server.db import make_engine
from fleet_server.messaging.bus import ingest_filter
from fleet_server.settings import ServerSettings
from tests.conftest import external_mqtt_url, fresh_postgres_database
from tests.fleet_server.helpers import (
    MqttProbe,
    make_settings,
    operator,
    publish_telemetry,
    running_app,
    unique_id,
    wait_until,
)
from tests.utils.mosquitto import private_mosquitto
from tests.utils.replica import ReplicaProcess

pytestmark = pytest.mark.integration

TOKEN = "operator-token-for-replica-tests-0123"  # noqa: S105 - test-only token
TTL_S, RENEW_S = 3.0, 1.0


def test_shared_group_without_an_external_broker_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="embedded broker does not support"):
        ServerSettings(data_dir=tmp_path, ingest_shared_group="edgefleet-ingest")
    with pytest.raises(ValidationError, match="ingest_shared_group"):
        ServerSettings(
            data_dir=tmp_path, broker_url="mqtt://127.0.0.1:1883", ingest_shared_group="a/b"
        )
    with pytest.raises(ValidationError, match="lease_renew_s"):
        ServerSettings(data_dir=tmp_path, lease_ttl_s=4, lease_renew_s=3)
    ok = ServerSettings(
        data_dir=tmp_path, broker_url="mqtt://127.0.0.1:1883", ingest_shared_group="edge-1"
    )
    assert ok.resolved_replica_id  # host-pid by default


def test_bus_shares_only_the_non_retained_channels() -> None:
    """Telemetry and events go through $share (split between replicas); state and status stay
    plain subscriptions on every replica. The MQTT v5 spec says a shared subscription gets no
    retained messages; Mosquitto 2.0.11 (CI's) does send them to each new shared subscriber,
    newer brokers follow the spec: a plain subscription gets the retained copy on both."""
    assert ingest_filter(Channel.TELEMETRY, "g1") == "$share/g1/edgefleet/v1/+/telemetry"
    assert ingest_filter(Channel.EVENTS, "g1") == "$share/g1/edgefleet/v1/+/events"
    assert ingest_filter(Channel.STATE, "g1") == "edgefleet/v1/+/state"
    assert ingest_filter(Channel.STATUS, "g1") == "edgefleet/v1/+/status"
    assert ingest_filter(Channel.TELEMETRY, None) == "edgefleet/v1/+/telemetry"


def test_retained_status_reaches_a_replica_in_a_shared_group(
    tmp_path: Path, stack: ExitStack
) -> None:
    """A replica started while a device is quiet still learns its retained status. A private
    Mosquitto: the shared one holds retained messages of every other test, more than its
    per-client queue (1000) delivers on subscribe."""
    broker = stack.enter_context(private_mosquitto(tmp_path))
    url = broker.url
    database = f"sqlite:///{tmp_path / 'fleet.db'}"
    group = f"ef-{secrets.token_hex(4)}"
    device = unique_id("quiet")
    settings = make_settings(tmp_path, database, broker_url=url, ingest_shared_group=group)
    with running_app(settings) as (client, _runtime):
        created = client.post("/api/v1/devices", json={"device_id": device}, headers=operator())
        assert created.status_code == 201, created.text
    probe = MqttProbe(url)
    try:
        status = Status(device_id=device, status="online")
        probe.publish(topic(device, Channel.STATUS), encode(status), retain=True)
        with running_app(settings) as (client, runtime):
            wait_until(
                lambda: client.get(f"/api/v1/devices/{device}", headers=operator()).json()[
                    "online"
                ],
                what="the retained status to be ingested",
            )
            assert runtime.bus is not None and runtime.bus.connected
    finally:
        probe.publish(topic(device, Channel.STATUS), b"", retain=True)
        probe.close()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exits:
        yield exits


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[list[ReplicaProcess], str, str]]:
    url = external_mqtt_url()
    with fresh_postgres_database() as database:
        group = f"ef-{secrets.token_hex(4)}"  # unique: other tests share the broker
        settings = {
            "EDGEFLEET_DATABASE_URL": database,
            "EDGEFLEET_BROKER_URL": url,
            "EDGEFLEET_INGEST_SHARED_GROUP": group,
            "EDGEFLEET_LEASE_TTL_S": str(TTL_S),
            "EDGEFLEET_LEASE_RENEW_S": str(RENEW_S),
            "EDGEFLEET_INGEST_BATCH_INTERVAL_S": "0.05",
            # A replica killed for good must not keep a broker session: Mosquitto goes on
            # handing the dead session its share of the group's messages until it expires
            # (README: "Running several server replicas").
            "EDGEFLEET_MQTT_SESSION_EXPIRY_S": "0",
        }
        # replica-b ingests through a worker process: both ways share one group.
        started = [
            ReplicaProcess(tmp_path / name, name=name, token=TOKEN, settings=settings | extra)
            for name, extra in (
                ("replica-a", {}),
                ("replica-b", {"EDGEFLEET_INGEST_WORKERS": "1"}),
            )
        ]
        try:
            started[0].start()
            started[0].wait_ready()  # the first one migrates the fresh database
            started[1].start()
            started[1].wait_ready()
            yield started, database, url
        finally:
            for replica in started:
                replica.stop()


def _leaders(replicas: list[ReplicaProcess]) -> list[str]:
    return [r.name for r in replicas if r.metrics().get("edgefleet_leader") == 1.0]


def test_two_replicas_share_ingest_and_one_drives(
    replicas: tuple[list[ReplicaProcess], str, str],
) -> None:
    group, database, url = replicas
    a, b = group
    fleet = FleetClient(a.url, TOKEN, timeout=30)
    devices = [unique_id("rep") for _ in range(6)]
    for device in devices:
        fleet.add_device(device)
    fleet.close()
    per_device = 150
    publishers = [devices[:3], devices[3:]]
    for chunk in publishers:
        publish_telemetry(url, chunk, per_device)
    total = len(devices) * per_device

    engine = make_engine(database)
    try:

        def stored() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM telemetry")).scalar_one())

        wait_until(lambda: stored() == total, timeout=60, what=f"{total} telemetry rows")
        with engine.connect() as conn:
            keys = set(conn.execute(text("SELECT device_id, seq FROM telemetry")).all())
            counts = dict(conn.execute(text("SELECT device_id, telemetry_seq FROM device")).all())
        assert keys == {(d, s) for d in devices for s in range(1, per_device + 1)}
        assert all(counts[d] == per_device for d in devices)  # the newest seq won everywhere

        # Stored, not received: both replicas also receive the shared broker's retained
        # state/status of other tests' devices (rejected as unknown).
        def stored_by_replica() -> dict[str, float]:
            return {r.name: r.metrics()["edgefleet_ingest_stored_total"] for r in group}

        # A worker reports its counters every 0.2 s: wait for the last report.
        wait_until(lambda: sum(stored_by_replica().values()) >= total, what="counters")
        stored_by = stored_by_replica()
        assert all(count > 0 for count in stored_by.values()), stored_by
        assert sum(stored_by.values()) == total, stored_by  # each message stored exactly once

        # One driver at a time.
        wait_until(lambda: len(_leaders(group)) == 1, timeout=TTL_S * 2, what="one leader")
        leader_name = _leaders(group)[0]
        leader = a if leader_name == a.name else b
        other = b if leader is a else a
        epoch = other.metrics().get("edgefleet_leader_epoch", 0.0)
        for _ in range(5):
            assert _leaders(group) == [leader_name]
            time.sleep(0.2)

        # Kill the driver: the other takes over within the TTL (plus one renew period).
        leader.kill()
        killed = time.monotonic()
        wait_until(
            lambda: other.metrics().get("edgefleet_leader") == 1.0,
            timeout=TTL_S + RENEW_S + 3,
            what="the surviving replica to take the lease",
        )
        took = time.monotonic() - killed
        assert took <= TTL_S + RENEW_S + 1.0, took
        assert other.metrics()["edgefleet_leader_epoch"] > epoch
        with engine.connect() as conn:
            holder, lease_epoch = conn.execute(
                text("SELECT holder, epoch FROM lease WHERE name = 'driver'")
            ).one()
        assert holder == other.name and lease_epoch >= 2
        # Ingest goes on through the survivor alone.
        publish_telemetry(url, devices[:2], 10)  # seqs 1..10 again: all duplicates
        fresh = [unique_id("late")]
        FleetClient(other.url, TOKEN, timeout=30).add_device(fresh[0])
        publish_telemetry(url, fresh, 20)
        wait_until(lambda: stored() == total + 20, timeout=30, what="ingest on the survivor")
    finally:
        engine.dispose()
