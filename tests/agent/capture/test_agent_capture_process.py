"""A real agent process on the real broker: telemetry carries input statistics and class
counts; the capture policy from the desired state fills the queue and the uploader empties it
into a local HTTP endpoint, within the policy's budget."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store import POINTER_FILE
from edgefleet.contract import (
    CapturePolicy,
    Channel,
    DesiredModel,
    DesiredState,
    Telemetry,
    decode,
    encode,
    parse_topic,
    topic,
)
from tests.agent.capture.helpers import SampleServer, with_reference
from tests.agent.helpers import Received, Watcher, config_toml
from tests.agent.test_agent_process import TOKEN, AgentProcess, device_id  # noqa: F401 (fixture)
from tests.utils.artifacts import bundle_of, digits_images

pytestmark = pytest.mark.integration


@pytest.fixture
def samples() -> Iterator[SampleServer]:
    s = SampleServer()
    thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _telemetry(m: Received, device: str) -> Telemetry | None:
    _device, channel = parse_topic(m.topic)
    if channel != Channel.TELEMETRY or not m.payload:
        return None
    payload = decode(channel, m.payload, device_id=device)
    assert isinstance(payload, Telemetry)
    return payload


def test_agent_reports_input_stats_and_uploads_captures_within_budget(
    mqtt_url: str,
    device_id: str,  # noqa: F811 (the fixture)
    tmp_path: Path,
    digits_v1: Path,
    samples: SampleServer,
) -> None:
    data_dir = tmp_path / "data"
    artifact = with_reference(digits_v1, tmp_path / "ref")
    shutil.copytree(artifact, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    images = tmp_path / "in"
    digits_images(images, 20)
    bundle = bundle_of(artifact, tmp_path / "v1.tar.gz").read_bytes()
    server_url = samples.url.removesuffix("/api/v1/samples")
    config = tmp_path / "agent.toml"
    text = config_toml(
        device_id=device_id,
        data_dir=data_dir,
        mqtt_url=mqtt_url,
        server_url=server_url,
        input_dir=images,
        rate_hz=100.0,
        interval_s=0.5,
    ).replace('token = "device-token"', f'token = "{TOKEN}"')
    config.write_text(text + "\n[capture]\nmax_per_hour = 5\nupload_rate_per_s = 50\n")
    policy = CapturePolicy(classes=[str(d) for d in range(10)], random=0.5, max_per_hour=100)
    desired = DesiredState(
        device_id=device_id,
        seq=1,
        model=DesiredModel(
            name="digits",
            version="1.0.0",
            url=f"{server_url}/bundles/v1",
            sha256=hashlib.sha256(bundle).hexdigest(),
            size=len(bundle),
        ),
        capture=policy,
    )
    with Watcher(mqtt_url, device_id) as watch:
        watch.publish(topic(device_id, Channel.DESIRED), encode(desired), retain=True)
        agent = AgentProcess(config)
        try:
            agent.first_line()
            with_inputs = watch.wait_for(
                lambda m: (t := _telemetry(m, device_id)) is not None and t.inputs is not None,
                what="telemetry with input statistics",
            )
            t = _telemetry(with_inputs, device_id)
            assert t is not None and t.inputs is not None and t.schema_version == 3
            assert len(t.inputs.channel_histograms) == 64  # one per digits feature
            # A subsample: one input in `capture.every`, paced to 2 % of inference time.
            assert 1 <= t.inputs.samples <= t.inference_count
            assert t.system["capture.every"] >= 1
            assert sum(t.class_counts.values()) == t.inference_count
            assert set(t.class_counts) <= {str(d) for d in range(10)}
            # Five captures in the hour (the device's own limit under the server's 100) ...
            deadline_msgs = watch.wait_count(
                lambda m: (
                    (t := _telemetry(m, device_id)) is not None
                    and t.system.get("capture.over_budget", 0) > 0
                ),
                1,
            )
            assert deadline_msgs
            end = time.monotonic() + 15
            while len(samples.stored) < 5 and time.monotonic() < end:
                time.sleep(0.1)
        finally:
            agent.stop()
            watch.publish(topic(device_id, Channel.DESIRED), b"", retain=True)
    # ... uploaded, with the device token, and no more than that.
    assert len(samples.stored) == 5, samples.statuses
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in samples.received)
    reasons = {meta.reason for meta, _, _ in samples.received}
    assert reasons <= {"random", "class"}
    for meta, content, _ in samples.received:
        assert meta.device_id == device_id and str(meta.model) == "digits@1.0.0"
        assert hashlib.sha256(content).hexdigest() == meta.sha256
        assert meta.content_type == "image/jpeg" and meta.input_stats is not None
    assert not list((data_dir / "capture").glob("*.json"))  # the queue is empty
