"""The agent rides out a broker restart: it keeps serving, reconnects, and re-announces itself.

Uses a private Mosquitto process (so the test can kill it) on a free port.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store import POINTER_FILE
from edgefleet.contract import Channel, State, Status, Telemetry, decode
from tests.agent.helpers import Watcher, config_toml
from tests.agent.test_agent_process import AgentProcess
from tests.utils.artifacts import digits_images
from tests.utils.mosquitto import PrivateMosquitto, private_mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    with private_mosquitto(tmp_path) as b:
        yield b


def test_agent_reconnects_after_broker_restart(
    broker: PrivateMosquitto, tmp_path: Path, digits_v1: Path
) -> None:
    device_id = f"rc-{secrets.token_hex(4)}"
    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    digits_images(tmp_path / "in", 4)
    config = tmp_path / "agent.toml"
    config.write_text(
        config_toml(
            device_id=device_id,
            data_dir=data_dir,
            mqtt_url=broker.url,
            input_dir=tmp_path / "in",
            interval_s=0.3,
        )
    )
    agent = AgentProcess(config)
    try:
        assert "running" in agent.first_line()
        broker.kill()
        time.sleep(1.5)  # telemetry intervals pass while the broker is down
        assert agent.proc.poll() is None, agent.stderr[-5:]
        outage_end = time.time()
        broker.start()  # a fresh broker: no retained messages, no sessions
        with Watcher(broker.url, device_id, name="after") as watch:
            tele = watch.wait_for(lambda m: m.topic.endswith("/telemetry"), timeout=40)
            t = decode(Channel.TELEMETRY, tele.payload, device_id=device_id)
            assert isinstance(t, Telemetry)
            # Telemetry produced during the outage was queued and delivered after reconnecting.
            queued = watch.wait_count(
                lambda m: (
                    m.topic.endswith("/telemetry")
                    and decode(Channel.TELEMETRY, m.payload).ts.timestamp() < outage_end
                ),  # type: ignore[union-attr]
                2,
                timeout=10,
            )
            assert len(queued) >= 2
            watch.wait_for(
                lambda m: (
                    m.topic.endswith("/telemetry")
                    and decode(Channel.TELEMETRY, m.payload).inference_count > 0
                ),  # type: ignore[union-attr]
                timeout=10,
            )
        # The new broker knows the device only because the agent re-published on reconnect.
        with Watcher(broker.url, device_id, name="late") as late:
            status = late.wait_for(lambda m: m.topic.endswith("/status") and m.retain)
            online = decode(Channel.STATUS, status.payload, device_id=device_id)
            assert isinstance(online, Status) and online.status == "online"
            state = late.wait_for(lambda m: m.topic.endswith("/state") and m.retain)
            decoded = decode(Channel.STATE, state.payload, device_id=device_id)
            assert isinstance(decoded, State) and str(decoded.running) == "digits@1.0.0"
        assert agent.stop() == 0, agent.stderr[-10:]
    finally:
        agent.kill()


def test_agent_serves_without_a_broker_and_connects_later(tmp_path: Path, digits_v1: Path) -> None:
    device_id = f"ob-{secrets.token_hex(4)}"
    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    digits_images(tmp_path / "in", 2)
    broker = PrivateMosquitto(tmp_path)  # not started yet: nothing listens on its port
    config = tmp_path / "agent.toml"
    config.write_text(
        config_toml(
            device_id=device_id,
            data_dir=data_dir,
            mqtt_url=broker.url,
            input_dir=tmp_path / "in",
            interval_s=0.3,
        ).replace("keepalive = 10", "keepalive = 10\nconnect_wait_s = 0.2")
    )
    notify_path = Path(tempfile.mkdtemp(prefix="sd")) / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(15)
    agent = AgentProcess(config, env={"NOTIFY_SOCKET": str(notify_path)})
    try:
        # Serving (systemd READY) although the broker is down.
        assert notify.recv(4096) == b"READY=1\nSTATUS=serving model=digits@1.0.0"
        time.sleep(1.0)
        assert agent.proc.poll() is None
        broker.start()
        assert agent.first_line(timeout=40).startswith(f"edgefleet agent {device_id} running")
        with Watcher(broker.url, device_id, name="late") as late:
            # Retained if it was published before this subscription, live (retain 0) if after:
            # on a busy machine the agent can print its line before it publishes "online".
            status = late.wait_for(lambda m: m.topic.endswith("/status"))
            online = decode(Channel.STATUS, status.payload, device_id=device_id)
            assert isinstance(online, Status) and online.status == "online"
            late.wait_for(lambda m: m.topic.endswith("/telemetry"))
        assert agent.stop() == 0, agent.stderr[-10:]
    finally:
        agent.kill()
        broker.cleanup()
        notify.close()
