"""The agent as a real subprocess (``python -m edgefleet agent run``) against a real broker."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store import POINTER_FILE
from edgefleet.contract import (
    Channel,
    DesiredState,
    Event,
    State,
    Status,
    Telemetry,
    decode,
    encode,
    parse_topic,
    topic,
)
from edgefleet.contract.payloads import Payload
from tests.agent.helpers import Received, Watcher, config_toml, desired_bundle, serve_bundles
from tests.utils.artifacts import bundle_of, digits_images

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "edgefleet", "agent"]
TOKEN = secrets.token_hex(8)
#: How long an agent process may take to start (imports, outbox, broker): ~2 s when quiet; 30 s
#: was once not enough with three test workers on two cores (load ~10).
STARTUP_S = 90.0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _decoded(message: Received, device_id: str) -> Payload | None:
    """The contract payload of a device → server message (None for ours and cleared ones)."""
    _device, channel = parse_topic(message.topic)
    if not message.payload or channel == Channel.DESIRED:
        return None
    return decode(channel, message.payload, device_id=device_id)


class AgentProcess:
    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*AGENT, "run", "--config", str(config)],
            cwd=ROOT,
            env={**_env(), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def first_line(self, timeout: float = STARTUP_S) -> str:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        assert result, f"agent printed nothing within {timeout} s: {self.stderr[-5:]}"
        return result[0]

    def served_first(self, timeout: float = STARTUP_S) -> str:
        """The model the agent served at start (its "serving committed model" log line).

        ``first_line`` is printed once the broker connection is up and names the model serving
        *then*: on a busy machine a retained desired state can already have swapped it (three
        tests read 2.0.0 there under load when they meant the committed model at start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stderr):
                if "serving committed model" in line:
                    return str(json.loads(line).get("model", ""))
            time.sleep(0.05)
        raise AssertionError(f"no 'serving committed model' within {timeout} s: {self.stderr[-5:]}")

    def stop(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def device_id(mqtt_url: str) -> Iterator[str]:
    """A fresh device id; its retained messages are cleared afterwards (shared brokers)."""
    value = f"it-{secrets.token_hex(4)}"
    yield value
    with Watcher(mqtt_url, value, name="cleanup") as cleaner:
        for channel in (Channel.DESIRED, Channel.STATE, Channel.STATUS):
            cleaner.publish(topic(value, channel), b"", retain=True)


def test_agent_serves_updates_and_stops_cleanly(
    mqtt_url: str, device_id: str, tmp_path: Path, digits_v1: Path, digits_v2: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    images = tmp_path / "in"
    digits_images(images, 8)
    (images / "zz-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bundle = bundle_of(digits_v2, tmp_path / "v2.tar.gz").read_bytes()

    with serve_bundles(TOKEN) as server, Watcher(mqtt_url, device_id) as watch:
        server.files["/bundles/v2"] = bundle
        config = tmp_path / "agent.toml"
        config.write_text(
            config_toml(
                device_id=device_id,
                data_dir=data_dir,
                mqtt_url=mqtt_url,
                server_url=server.url,
                input_dir=images,
                rate_hz=50.0,
                interval_s=0.5,
            ).replace('token = "device-token"', f'token = "{TOKEN}"')
        )
        notify_path = Path(tempfile.mkdtemp(prefix="sd")) / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(10)
        agent = AgentProcess(config, env={"NOTIFY_SOCKET": str(notify_path)})
        try:
            line = agent.first_line()
            assert line == f"edgefleet agent {device_id} running model=digits@1.0.0\n"
            assert notify.recv(4096) == b"READY=1\nSTATUS=serving model=digits@1.0.0"
            assert notify.recv(4096) == b"WATCHDOG=1"

            def payload_is(kind: type, check: object = None) -> object:
                def predicate(m: Received) -> bool:
                    p = _decoded(m, device_id)
                    return isinstance(p, kind) and (check is None or check(p))  # type: ignore[operator]

                return predicate

            online = watch.wait_for(payload_is(Status, lambda p: p.status == "online"))
            assert online.qos == 1
            watch.wait_for(payload_is(State, lambda p: str(p.running) == "digits@1.0.0"))
            tele = watch.wait_for(
                payload_is(
                    Telemetry,
                    lambda p: p.inference_count > 0 and p.errors.get("corrupt_image", 0) > 0,
                ),
                what="telemetry with inferences and a corrupt image",
            )
            t = _decoded(tele, device_id)
            assert isinstance(t, Telemetry) and str(t.model) == "digits@1.0.0"
            assert t.latency_ms is not None and t.latency_ms.p50 > 0
            assert sum(t.confidence_histogram) == t.inference_count
            assert {"rss_mb", "cpu_percent", "disk_free_mb"} <= set(t.system)

            desired_topic = topic(device_id, Channel.DESIRED)
            hostile = [
                b"not json",
                b"[" * 60_000,  # under the broker's packet limit, but nested past recursion
                json.dumps({"schema_version": 1, "kind": "desired"}).encode(),
                encode(DesiredState(device_id="someone-else", seq=1, model=None)),
            ]
            for payload in hostile:
                watch.publish(desired_topic, payload)
            rejected = watch.wait_count(
                payload_is(Event, lambda p: p.event == "payload.rejected"), len(hostile)
            )
            details = [_decoded(m, device_id).detail for m in rejected]  # type: ignore[union-attr]
            assert all(d.startswith("desired: ") for d in details), details

            desired = desired_bundle(
                device_id, seq=1, version="2.0.0", url=f"{server.url}/bundles/v2", bundle=bundle
            )
            watch.publish(desired_topic, desired, retain=True)
            watch.wait_for(
                payload_is(Event, lambda p: p.event == "update.committed"), what="committed"
            )
            watch.wait_for(
                payload_is(
                    State, lambda p: str(p.running) == "digits@2.0.0" and p.phase == "serving"
                )
            )
            watch.wait_for(
                payload_is(
                    Telemetry, lambda p: str(p.model) == "digits@2.0.0" and p.inference_count > 0
                ),
                what="telemetry from the new model",
            )
            assert server.requests == [("/bundles/v2", f"Bearer {TOKEN}")]

            assert agent.stop() == 0, agent.stderr[-10:]
            messages = []
            while (message := notify.recv(4096)) != b"STOPPING=1":
                messages.append(message)
            assert set(messages) <= {b"WATCHDOG=1"}
        finally:
            agent.kill()
            notify.close()
        watch.wait_for(payload_is(Event, lambda p: p.event == "agent.stopping"))

        events = [p.event for m in watch.messages if isinstance(p := _decoded(m, device_id), Event)]
        update = [e for e in events if e.startswith("update.")]
        assert update == [
            "update.received",
            "update.downloading",
            "update.verifying",
            "update.self_test",
            "update.switching",
            "update.committed",
        ]
        seqs = [
            p.seq
            for m in watch.messages
            if isinstance(p := _decoded(m, device_id), State | Event | Telemetry)
        ]
        assert len(set(seqs)) == len(seqs), "a sequence number was used twice"

    with Watcher(mqtt_url, device_id, name="late") as late:
        status = late.wait_for(lambda m: m.topic.endswith("/status") and m.retain)
        offline = _decoded(status, device_id)
        assert isinstance(offline, Status) and offline.status == "offline"
        state = late.wait_for(lambda m: m.topic.endswith("/state") and m.retain)
        final = _decoded(state, device_id)
        assert isinstance(final, State) and str(final.running) == "digits@2.0.0"
    assert json.loads((data_dir / POINTER_FILE).read_text())["version"] == "2.0.0"
    for line in agent.stderr:
        json.loads(line)  # every log line is JSON


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('device_id = "BAD ID"\n')
    result = subprocess.run(
        [*AGENT, "run", "--config", str(config)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"edgefleet agent: {config}: device_id: Expected `str` matching regex")


def test_infer_command_prints_json_lines(tmp_path: Path, digits_v1: Path) -> None:
    images = digits_images(tmp_path / "in", 3)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"nope")
    result = subprocess.run(
        [*AGENT, "infer", str(digits_v1), *map(str, images), str(corrupt), "--top-k", "2"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    for image, row in zip(images, lines, strict=False):
        assert row["file"] == str(image)
        assert len(row["top_k"]) == 2
        assert row["top_k"][0]["label"] == image.stem.rsplit("label", 1)[1]
    assert lines[3]["file"] == str(corrupt) and "cannot decode image" in lines[3]["error"]
