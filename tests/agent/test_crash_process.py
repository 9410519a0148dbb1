"""A real agent killed (SIGKILL) in the middle of downloading a bundle resumes it after a restart.

The bundle server stalls half-way; the half that arrived is on disk in ``<sha>.tar.gz.part``.
After the kill, the restarted agent serves the committed model, retries the retained desired
state and fetches only the missing bytes with a ``Range`` request.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from agent.store import POINTER_FILE
from edgefleet.contract import Channel, Event, Telemetry, decode, topic
from tests.agent.helpers import Received, Watcher, config_toml, desired_bundle, serve_bundles
from tests.agent.test_agent_process import TOKEN, AgentProcess, device_id  # noqa: F401  (fixture)
from tests.utils.artifacts import bundle_of, digits_images

pytestmark = pytest.mark.integration


def _part_size(downloads: Path) -> int:
    parts = list(downloads.glob("*.part")) if downloads.exists() else []
    return parts[0].stat().st_size if parts else 0


def test_kill_during_download_resumes_with_range(
    mqtt_url: str,
    device_id: str,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    digits_v1: Path,
    digits_v2: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    digits_images(tmp_path / "in", 4)
    data = bundle_of(digits_v2, tmp_path / "v2.tgz").read_bytes()
    half = len(data) // 2
    with serve_bundles(TOKEN) as server, Watcher(mqtt_url, device_id) as watch:
        server.files["/b/v2"] = data
        server.ranges = True
        server.truncate["/b/v2"] = half
        server.hold = threading.Event()
        config = tmp_path / "agent.toml"
        config.write_text(
            config_toml(
                device_id=device_id,
                data_dir=data_dir,
                mqtt_url=mqtt_url,
                server_url=server.url,
                input_dir=tmp_path / "in",
                rate_hz=50.0,
                interval_s=0.5,
            ).replace('token = "device-token"', f'token = "{TOKEN}"')
        )
        agent = AgentProcess(config)
        try:
            assert "model=digits@1.0.0" in agent.first_line()
            desired = desired_bundle(
                device_id, seq=1, version="2.0.0", url=f"{server.url}/b/v2", bundle=data
            )
            watch.publish(topic(device_id, Channel.DESIRED), desired, retain=True)
            deadline = time.monotonic() + 30
            while _part_size(data_dir / "downloads") < half:
                assert time.monotonic() < deadline, "the stalled download wrote nothing"
                time.sleep(0.05)
            agent.kill()  # SIGKILL mid-transfer
            server.hold.set()
            del server.truncate["/b/v2"]
            assert json.loads((data_dir / POINTER_FILE).read_text())["version"] == "1.0.0"
            assert _part_size(data_dir / "downloads") == half

            seen = len(watch.messages)
            agent = AgentProcess(config)
            assert "model=digits@1.0.0" in agent.first_line()

            def committed(m: Received) -> bool:
                if watch.messages.index(m) < seen or not m.topic.endswith("/events"):
                    return False
                e = decode(Channel.EVENTS, m.payload, device_id=device_id)
                return isinstance(e, Event) and e.event == "update.committed"

            watch.wait_for(committed, timeout=40)
            assert server.ranges_asked == [f"bytes={half}-"]

            def counters() -> dict[str, float]:
                sums: dict[str, float] = {}
                for m in watch.messages[seen:]:
                    if m.topic.endswith("/telemetry"):
                        t = decode(Channel.TELEMETRY, m.payload, device_id=device_id)
                        assert isinstance(t, Telemetry)
                        for key, value in t.system.items():
                            if key.startswith("download."):
                                sums[key] = sums.get(key, 0.0) + value
                return sums

            deadline = time.monotonic() + 20  # counts arrive with the next telemetry interval
            while counters().get("download.bytes", 0) < len(data) - half:
                assert time.monotonic() < deadline, counters()
                time.sleep(0.1)
            # Only the missing half came over the wire again; nothing was fetched twice.
            assert counters() == {"download.bytes": len(data) - half, "download.resumes": 1}
            assert json.loads((data_dir / POINTER_FILE).read_text())["version"] == "2.0.0"
            assert list((data_dir / "downloads").iterdir()) == []
            assert agent.stop() == 0, agent.stderr[-10:]
        finally:
            server.hold.set()
            agent.kill()
