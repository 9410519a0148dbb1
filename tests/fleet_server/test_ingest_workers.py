"""Ingest worker processes (``ingest_workers``): telemetry and events from a real Mosquitto are
split between workers, every message stored once, counters summed into the server's; a killed
worker is started again; without an external broker the setting is refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlmodel import Session

from edgefleet.contract import Channel, Event, Telemetry, encode, topic
from fleet_server.models import EventRow, TelemetryRow
from fleet_server.settings import ServerSettings
from tests.conftest import external_mqtt_url
from tests.fleet_server.helpers import (
    MqttProbe,
    make_settings,
    operator,
    running_app,
    unique_id,
    wait_until,
)

pytestmark = pytest.mark.integration
MODEL = {"name": "digits", "version": "1.0.0"}


def test_workers_need_an_external_broker(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ingest_workers needs broker_url"):
        ServerSettings(data_dir=tmp_path, ingest_workers=2)
    with pytest.raises(ValidationError):
        ServerSettings(data_dir=tmp_path, broker_url="mqtt://127.0.0.1:1", ingest_workers=-1)
    settings = ServerSettings(
        data_dir=tmp_path, broker_url="mqtt://127.0.0.1:1", ingest_workers=2, replica_id="a.b c"
    )
    assert settings.resolved_ingest_group == "edgefleet-a-b-c"


def test_workers_split_ingest_and_restart(tmp_path: Path, database_url: str) -> None:
    url = external_mqtt_url()
    settings = make_settings(tmp_path, database_url, broker_url=url, ingest_workers=2)
    devices = [unique_id("wrk") for _ in range(4)]
    with running_app(settings) as (client, runtime):
        for device in devices:
            assert client.post(
                "/api/v1/devices", json={"device_id": device}, headers=operator()
            ).is_success
        probe = MqttProbe(url)
        try:
            for seq in range(1, 101):
                for device in devices:
                    message = Telemetry(
                        device_id=device, seq=seq, interval_s=1, model=MODEL, inference_count=1
                    )
                    probe.publish(topic(device, Channel.TELEMETRY), encode(message))
            event = Event(device_id=devices[0], seq=1, event="update.received")
            probe.publish(topic(devices[0], Channel.EVENTS), encode(event))
            probe.publish(topic(devices[0], Channel.TELEMETRY), b"{not json")
            wait_until(lambda: runtime.stats.stored >= 401, timeout=30, what="401 rows stored")
            wait_until(lambda: runtime.stats.rejected["bad_json"] >= 1, what="the bad message")
            assert runtime.engine is not None
            with Session(runtime.engine) as session:
                rows = session.exec(select(func.count()).select_from(TelemetryRow)).one()
                events = session.exec(select(func.count()).select_from(EventRow)).one()
            assert (rows[0], events[0]) == (400, 1)
            sources = runtime.stats.sources()
            assert set(sources) == {"worker-0", "worker-1"}
            assert all(s["received"] > 0 for s in sources.values()), sources
            assert sum(s["stored"] for s in sources.values()) == 401
            metrics = client.get("/metrics").text
            assert "edgefleet_ingest_stored_total 401.0" in metrics
            assert client.get("/readyz").json()["ingest_workers"] is True

            # A worker that dies is started again and ingest goes on.
            assert runtime.workers is not None
            victim = runtime.workers.pids()["worker-0"]
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: runtime.workers is not None and runtime.workers.restarts == 1)
            wait_until(lambda: runtime.workers is not None and runtime.workers.alive, timeout=30)
            time.sleep(1.0)  # the new worker subscribes
            for seq in range(101, 121):
                for device in devices:
                    message = Telemetry(
                        device_id=device, seq=seq, interval_s=1, model=MODEL, inference_count=1
                    )
                    probe.publish(topic(device, Channel.TELEMETRY), encode(message))
            wait_until(lambda: runtime.stats.stored >= 481, timeout=30, what="ingest after restart")
            assert runtime.stats.stored == 481
        finally:
            probe.close()
    assert runtime.workers is None  # stopped with the app
