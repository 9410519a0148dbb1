"""Issue #11, finding 5: a device's clock and counter cannot freeze what the server believes.

Each test publishes what a device with its own credentials could send, through a real broker
(embedded or Mosquitto) into a real database (SQLite and PostgreSQL), and reads the result back
through the API. Before the fix: a retained "online" dated 9999-12-31 kept the device online
after its "offline", an "offline" dated 2099 kept it offline after its "online", a state with
seq 2^63-1 kept its phase for ever (every later state counted as a duplicate), and telemetry
dated year 1 and 9999 was stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgefleet.contract import Channel, Event, State, Status, Telemetry, encode, topic
from fleet_server.messaging.sanity import DeviceClock, clock_problem
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import (
    MqttProbe,
    make_settings,
    operator,
    running_app,
    unique_id,
    wait_until,
)
from tests.fleet_server.test_ingest import _settle, _wait_for
from tests.utils.agent_process import Device as AgentDevice
from tests.utils.agent_process import agent_toml

pytestmark = pytest.mark.integration

FAR_FUTURE = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
YEAR_2099 = datetime(2099, 1, 1, tzinfo=UTC)
YEAR_1 = datetime(1, 1, 1, tzinfo=UTC)


def _device(client: TestClient, device_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/devices/{device_id}", headers=operator())
    assert response.status_code == 200, response.text
    data = response.json()
    assert isinstance(data, dict)
    return data


def _status(device_id: str, status: Any, ts: datetime) -> bytes:
    return encode(Status(device_id=device_id, status=status, ts=ts))


@dataclass
class Fleet:
    client: TestClient
    runtime: Runtime
    probe: MqttProbe
    device_id: str


@pytest.fixture
def fleet(tmp_path: Path, mqtt_url: str, database_url: str) -> Iterator[Fleet]:
    """A server on a real broker and database, one registered device, a client to speak as it."""
    settings = make_settings(tmp_path, database_url, broker_url=mqtt_url)
    with running_app(settings) as (client, runtime):
        device_id = unique_id()
        created = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
        assert created.status_code == 201, created.text
        probe = MqttProbe(mqtt_url)
        try:
            yield Fleet(client, runtime, probe, device_id)
        finally:
            probe.close()


def test_status_from_the_future_cannot_freeze_liveness(fleet: Fleet) -> None:
    client, runtime, probe, device_id = fleet.client, fleet.runtime, fleet.probe, fleet.device_id
    status_topic = topic(device_id, Channel.STATUS)
    try:
        baseline = _settle(runtime)
        now = datetime.now(UTC)
        # "online" from the year 9999, then the device really goes offline (its Last Will,
        # dated when it connected a minute ago).
        probe.publish(status_topic, _status(device_id, "online", FAR_FUTURE), retain=True)
        probe.publish(status_topic, _status(device_id, "online", now), retain=True)
        probe.publish(
            status_topic, _status(device_id, "offline", now - timedelta(minutes=1)), retain=True
        )
        delta = _wait_for(runtime, baseline, 3)
        assert _device(client, device_id)["online"] is False
        # "offline" from 2099, then the device comes back.
        probe.publish(status_topic, _status(device_id, "offline", YEAR_2099), retain=True)
        probe.publish(status_topic, _status(device_id, "online", now), retain=True)
        delta = _wait_for(runtime, baseline, 5)
        assert _device(client, device_id)["online"] is True
        assert delta["rejected"] == {"ts_future": 2}
        assert delta["stored"] == 3
        metrics = client.get("/metrics").text
        assert 'edgefleet_ingest_rejected_total{reason="ts_future"}' in metrics
    finally:
        probe.publish(status_topic, b"", retain=True)  # clear the retained status


def test_a_huge_state_seq_does_not_wedge_the_device(fleet: Fleet) -> None:
    client, runtime, probe, device_id = fleet.client, fleet.runtime, fleet.probe, fleet.device_id
    state_topic = topic(device_id, Channel.STATE)

    def state(seq: int, phase: Any) -> bytes:
        return encode(State(device_id=device_id, seq=seq, phase=phase, agent_version="1"))

    baseline = _settle(runtime)
    probe.publish(state_topic, state(2**63 - 1, "failed"))
    probe.publish(state_topic, state(40, "serving"))  # the device's real counter: a reset
    probe.publish(state_topic, state(41, "probation"))
    probe.publish(state_topic, state(39, "idle"))  # an out-of-order copy: still ignored
    delta = _wait_for(runtime, baseline, 4)
    assert _device(client, device_id)["phase"] == "probation"
    assert (delta["stored"], delta["duplicates"]) == (3, 1)
    assert runtime.stats.seq_resets == 1
    assert "edgefleet_ingest_seq_resets_total 1.0" in client.get("/metrics").text


def test_telemetry_dated_year_1_or_9999_is_refused_and_a_backlog_is_kept(fleet: Fleet) -> None:
    client, runtime, probe, device_id = fleet.client, fleet.runtime, fleet.probe, fleet.device_id
    telemetry_topic = topic(device_id, Channel.TELEMETRY)

    def telemetry(seq: int, ts: datetime) -> bytes:
        return encode(
            Telemetry(
                device_id=device_id, seq=seq, ts=ts, interval_s=1, model=None, inference_count=1
            )
        )

    baseline = _settle(runtime)
    now = datetime.now(UTC)
    probe.publish(telemetry_topic, telemetry(1, YEAR_1))
    probe.publish(telemetry_topic, telemetry(2, FAR_FUTURE))
    # What an agent's outbox sends after two days offline: kept (device_ts_past_s, 7 days).
    probe.publish(telemetry_topic, telemetry(3, now - timedelta(days=2)))
    probe.publish(telemetry_topic, telemetry(4, now))
    delta = _wait_for(runtime, baseline, 4)
    assert delta["rejected"] == {"ts_past": 1, "ts_future": 1}
    rows = client.get(f"/api/v1/devices/{device_id}/telemetry", headers=operator()).json()
    assert sorted(row["seq"] for row in rows) == [3, 4]


def test_a_killed_agent_goes_offline_by_its_last_will(tmp_path: Path, database_url: str) -> None:
    """A real agent process, SIGKILLed: its Last Will ("offline", dated when the agent started,
    so before its "online") must mark it offline. It did not while ordering was by ``ts``."""
    settings = make_settings(tmp_path, database_url)
    with running_app(settings) as (client, runtime):
        device_id = unique_id()
        created = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
        assert created.status_code == 201, created.text
        device = AgentDevice(
            device_id=device_id,
            token=created.json()["token"],
            data_dir=tmp_path / "agent",
            config=tmp_path / "agent.toml",
        )
        device.config.write_text(
            agent_toml(
                device,
                mqtt_url=runtime.broker_url,
                server_url=settings.resolved_public_url,
                interval_s=0.5,
            )
        )
        device.start()
        assert device.run is not None
        try:
            wait_until(lambda: _device(client, device_id)["online"] is True, 30, "online")
            device.run.proc.kill()  # SIGKILL: no clean disconnect, the broker sends the will
            device.run.proc.wait(10)
            wait_until(lambda: _device(client, device_id)["online"] is False, 15, "offline")
        finally:
            device.run.kill()


def test_a_reinstalled_agent_loses_no_telemetry(tmp_path: Path, database_url: str) -> None:
    """The same device credentials with a fresh data directory (the agent reinstalled, its
    seq.json gone): every telemetry message of the new install must be stored. While a fresh
    counter started at 0 the new messages reused (device, seq) keys of the old install and
    ingest dropped them as duplicates."""
    settings = make_settings(tmp_path, database_url)
    with running_app(settings) as (client, runtime):
        device_id = unique_id()
        created = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        delivered: list[int] = []  # telemetry seqs each install queued and got out
        for install in ("first", "reinstalled"):
            (tmp_path / install).mkdir()  # its own config, log and data directory
            device = AgentDevice(
                device_id=device_id,
                token=token,
                data_dir=tmp_path / install / "data",
                config=tmp_path / install / "agent.toml",
            )
            device.config.write_text(
                agent_toml(
                    device,
                    mqtt_url=runtime.broker_url,
                    server_url=settings.resolved_public_url,
                    interval_s=0.1,
                )
            )
            device.start()
            assert device.run is not None
            try:
                wait_until(
                    lambda d=device: len(d.queued().get("telemetry", [])) >= 15,  # type: ignore[misc]
                    30,
                    f"{install}: telemetry",
                )
                device.run.stop()  # SIGTERM: drains its outbox (bounded)
            finally:
                device.run.kill()
            left = device.outbox_seqs()
            delivered += [seq for seq in device.queued()["telemetry"] if seq not in left]
        assert runtime.writer is not None and runtime.writer.flush(10)
        rows = client.get(
            f"/api/v1/devices/{device_id}/telemetry?limit=1000", headers=operator()
        ).json()
        stored = sorted(row["seq"] for row in rows)
        lost = len(delivered) - len(stored)
        assert lost == 0, f"{lost} of {len(delivered)} delivered telemetry messages not stored"
        assert stored == sorted(delivered)


def test_which_timestamps_are_refused() -> None:
    """The past bound is for the stored time series only: a retained state or status comes back
    with its old time after a server restart, and a Last Will carries the connect time."""
    now = datetime(2026, 6, 1, tzinfo=UTC)
    month_ago, tomorrow_and_more = now - timedelta(days=30), now + timedelta(days=1, minutes=1)
    clock = DeviceClock()

    def telemetry(ts: datetime) -> Telemetry:
        return Telemetry(device_id="d", seq=1, ts=ts, interval_s=1, model=None, inference_count=0)

    def state(ts: datetime) -> State:
        return State(device_id="d", seq=1, ts=ts, phase="idle", agent_version="1")

    def event(ts: datetime) -> Event:
        return Event(device_id="d", seq=1, ts=ts, event="agent.started")

    def status(ts: datetime) -> Status:
        return Status(device_id="d", status="offline", ts=ts)

    for build in (telemetry, state, event, status):
        assert clock_problem(build(now), now, clock) is None
        assert clock_problem(build(tomorrow_and_more), now, clock) == "ts_future"
    assert clock_problem(telemetry(month_ago), now, clock) == "ts_past"
    assert clock_problem(event(month_ago), now, clock) == "ts_past"
    assert clock_problem(state(month_ago), now, clock) is None
    assert clock_problem(status(month_ago), now, clock) is None
    assert clock_problem(telemetry(now - timedelta(days=6)), now, clock) is None  # a backlog
