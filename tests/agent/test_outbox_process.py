"""Store-and-forward end to end: a real agent process, a private Mosquitto that is stopped.

Under steady telemetry the broker goes away; the agent queues on disk, is killed with SIGKILL
mid-outage, restarts (still offline) and queues more; the broker comes back. A subscriber whose
session the broker persisted across the outage must then see every telemetry ``seq`` the agent
queued, exactly once, in order.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import OUTBOX_FILE
from tests.agent.helpers import config_toml
from tests.agent.test_agent_process import AgentProcess
from tests.utils.mosquitto import PrivateMosquitto, private_mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    with private_mosquitto(tmp_path, persistent=True) as b:
        yield b


class SeqSubscriber:
    """A clean_session=False subscriber recording the ``seq`` of every telemetry message."""

    def __init__(self, port: int, device_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.seqs: list[int] = []
        self.backlogs: list[float] = []
        self._cond = threading.Condition()
        topic = f"edgefleet/v1/{device_id}/telemetry"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{device_id}", clean_session=False
        )
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        payload = json.loads(msg.payload)  # type: ignore[attr-defined]
        with self._cond:
            self.seqs.append(int(payload["seq"]))
            self.backlogs.append(float(payload["system"]["outbox_messages"]))
            self._cond.notify_all()

    def wait_for(self, wanted: set[int], *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not wanted <= set(self.seqs):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(wanted - set(self.seqs))
                    raise TimeoutError(f"{len(missing)} seqs missing, first {missing[:10]}")
                self._cond.wait(remaining)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _queued_telemetry(agent: AgentProcess) -> list[int]:
    """The telemetry seqs the agent logged as queued (debug log, one JSON line each)."""
    seqs = []
    for line in list(agent.stderr):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "queued" and entry.get("channel") == "telemetry":
            seqs.append(int(entry["seq"]))
    return seqs


def _outbox_telemetry(data_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{data_dir / OUTBOX_FILE}?mode=ro", uri=True)
    try:
        return int(
            conn.execute("SELECT COUNT(*) FROM message WHERE kind='telemetry'").fetchone()[0]
        )
    finally:
        conn.close()


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_outage_and_kill_lose_and_duplicate_nothing(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    device_id = f"ob-{secrets.token_hex(4)}"
    data_dir = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(
        config_toml(
            device_id=device_id,
            data_dir=data_dir,
            mqtt_url=broker.url,
            interval_s=0.25,
            extra='log_level = "debug"',
        ).replace("keepalive = 10", "keepalive = 10\nconnect_wait_s = 0.5")
    )
    sub = SeqSubscriber(broker.port, device_id)
    first = AgentProcess(config)
    second: AgentProcess | None = None
    try:
        assert "running" in first.first_line()
        assert _wait(lambda: len(sub.seqs) >= 3, 20), first.stderr[-5:]
        online_before = len(sub.seqs)

        broker.stop()  # SIGTERM: Mosquitto saves the subscriber's session
        assert _wait(lambda: _outbox_telemetry(data_dir) >= 4, 20), first.stderr[-5:]
        first.kill()  # SIGKILL mid-outage, backlog on disk only
        buffered_at_kill = _outbox_telemetry(data_dir)
        queued_first = _queued_telemetry(first)

        second = AgentProcess(config)  # restarts offline, keeps queueing
        assert _wait(lambda: len(_queued_telemetry(second)) >= 4, 20), second.stderr[-5:]
        assert second.proc.poll() is None
        buffered = _outbox_telemetry(data_dir)
        broker.start()
        assert "running" in second.first_line(timeout=40)
        sub.wait_for(set(queued_first) | set(_queued_telemetry(second)), timeout=40)
        assert second.stop() == 0, second.stderr[-10:]  # drains what is left before exiting
        queued = queued_first + _queued_telemetry(second)
        sub.wait_for(set(queued), timeout=20)
        time.sleep(0.5)  # a duplicate, if any, would arrive right behind
        assert _outbox_telemetry(data_dir) == 0

        received = list(sub.seqs)
        duplicates = sum(n - 1 for n in Counter(received).values())
        print(  # noqa: T201  (numbers for the report, shown with -s)
            f"outbox: online_before={online_before} buffered_at_kill={buffered_at_kill} "
            f"buffered_before_reconnect={buffered} queued={len(queued)} "
            f"received={len(received)} duplicates={duplicates}"
        )
        assert duplicates == 0
        assert received == sorted(received), "telemetry arrived out of order"
        assert set(queued) <= set(received)
        # Only a message put in the outbox just before SIGKILL, whose log line was not yet
        # written, may arrive without having been logged.
        assert len(set(received) - set(queued)) <= 1
        assert queued == sorted(queued) and len(set(queued)) == len(queued)
        # Telemetry reports the backlog it was queued behind: > 0 during the outage.
        assert max(sub.backlogs) >= 3
    finally:
        first.kill()
        if second is not None:
            second.kill()
        sub.close()
