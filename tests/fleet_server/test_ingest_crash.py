"""A server SIGKILLed while ingesting loses nothing: with a kept MQTT v5 session the bus
acknowledges a message to the broker only once its batch is stored, so what was received but not
yet committed is sent again when the restarted server resumes its session (Mosquitto; the
server as a real process). Batches are made long (10,000 messages or 10 s) so that the whole
burst is received and none of it committed when the server dies; before acks-after-commit, every
one of those messages was lost."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text

from edgefleet.mqtt import BrokerAddress
from fleet_server.client.api import FleetClient
from fleet_server.db import make_engine
from tests.conftest import external_mqtt_url, fresh_postgres_database
from tests.fleet_server.helpers import publish_telemetry, unique_id, wait_until
from tests.utils.replica import ReplicaProcess

pytestmark = pytest.mark.integration

TOKEN = "operator-token-for-ingest-crash-0123"  # noqa: S105 - test-only token
DEVICES, PER_DEVICE = 4, 1000


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_server_killed_mid_ingest_loses_no_message(tmp_path: Path, kind: str) -> None:
    """On PostgreSQL with the default array statements (ingest_pg_statements=arrays)."""
    if kind == "sqlite":
        _killed_mid_ingest(tmp_path, f"sqlite:///{tmp_path / 'fleet.db'}")
        return
    with fresh_postgres_database() as database:
        _killed_mid_ingest(tmp_path, database)


def _killed_mid_ingest(tmp_path: Path, database: str) -> None:
    url = external_mqtt_url()
    server = ReplicaProcess(
        tmp_path / "server",
        name=f"crash-{secrets.token_hex(3)}",
        token=TOKEN,
        settings={
            "EDGEFLEET_DATABASE_URL": database,
            "EDGEFLEET_BROKER_URL": url,
            "EDGEFLEET_MQTT_SESSION_EXPIRY_S": "120",  # the session outlives the crash
            "EDGEFLEET_INGEST_BATCH_SIZE": "10000",
            "EDGEFLEET_INGEST_BATCH_INTERVAL_S": "10",  # received, not yet committed
        },
    )
    engine = make_engine(database)
    try:
        server.start()
        server.wait_ready()
        fleet = FleetClient(server.url, TOKEN, timeout=30)
        devices = [unique_id("crash") for _ in range(DEVICES)]
        for device in devices:
            fleet.add_device(device)
        fleet.close()

        def stored() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM telemetry")).scalar_one())

        began = time.monotonic()
        publish_telemetry(url, devices, PER_DEVICE, inflight=500)  # all acknowledged by the broker
        total = DEVICES * PER_DEVICE
        time.sleep(0.5)  # delivered to the server by now
        assert time.monotonic() - began < 8, "too slow: the first batch may have committed"
        server.kill()  # received, none committed yet
        assert stored() == 0
        server.start()  # same client id: resumes the kept session
        server.wait_ready()
        wait_until(lambda: stored() == total, timeout=90, what=f"{total} rows after the restart")
        with engine.connect() as conn:
            keys = list(conn.execute(text("SELECT device_id, seq FROM telemetry")).all())
        assert len(keys) == total, "a row stored twice"  # the primary key forbids it; checked
        assert set(keys) == {(d, s) for d in devices for s in range(1, PER_DEVICE + 1)}
    finally:
        server.stop()
        # Leave no kept session behind on the shared broker: reconnect clean, expiry 0.
        address = BrokerAddress.from_url(url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=server.env["EDGEFLEET_MQTT_CLIENT_ID"],
            protocol=mqtt.MQTTv5,
        )
        client.connect(address.host, address.port, clean_start=True)
        client.disconnect()
        engine.dispose()
