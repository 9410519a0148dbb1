"""Health-gated commit in a real agent process: bad models are rolled back while serving.

Each bad model passes its self-test (so it is swapped in) and fails on real traffic: one emits
NaN for a blank image, one is far slower than the model it replaces. Both are rolled back to the
cached previous model without a download, and ``current.json`` never names them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.store import POINTER_FILE
from edgefleet.contract import (
    Channel,
    Event,
    State,
    decode,
    topic,
)
from tests.agent.helpers import Received, Watcher, config_toml, desired_bundle, serve_bundles
from tests.agent.probation_models import nan_on_real_inputs, slow
from tests.agent.test_agent_process import TOKEN, AgentProcess, device_id  # noqa: F401  (fixture)
from tests.utils.artifacts import bundle_of, digits_images

pytestmark = pytest.mark.integration
Predicate = Callable[[Received], bool]


def _event(device: str, kind: str, version: str | None = None) -> Predicate:
    def predicate(m: Received) -> bool:
        if not m.topic.endswith("/events"):
            return False
        e = decode(Channel.EVENTS, m.payload, device_id=device)
        return (
            isinstance(e, Event)
            and e.event == kind
            and (version is None or str(e.model) == f"digits@{version}")
        )

    return predicate


def _serving(device: str, version: str) -> Predicate:
    def predicate(m: Received) -> bool:
        if not m.topic.endswith("/state"):
            return False
        s = decode(Channel.STATE, m.payload, device_id=device)
        return isinstance(s, State) and s.phase == "serving" and str(s.running) == version

    return predicate


def test_nan_and_slow_models_are_rolled_back(
    mqtt_url: str,
    device_id: str,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    digits_v1: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    images = tmp_path / "in"
    digits_images(images, 6)
    cv2.imwrite(str(images / "blank.png"), np.zeros((8, 8), dtype=np.uint8))
    bundles = {
        "2.0.0": bundle_of(
            nan_on_real_inputs(tmp_path / "nan", version="2.0.0"), tmp_path / "2.tgz"
        ),
        "3.0.0": bundle_of(slow(tmp_path / "slow", version="3.0.0"), tmp_path / "3.tgz"),
    }
    with serve_bundles(TOKEN) as server, Watcher(mqtt_url, device_id) as watch:
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
                extra="[probation]\nlatency_floor_ms = 0.2\nmax_s = 20\n",
            ).replace('token = "device-token"', f'token = "{TOKEN}"')
        )
        agent = AgentProcess(config)
        try:
            assert "model=digits@1.0.0" in agent.first_line()
            # A baseline p95 of the committed model: a few telemetry intervals of traffic.
            watch.wait_count(
                lambda m: (
                    m.topic.endswith("/telemetry") and b'"inference_count":0' not in m.payload
                ),
                2,
            )
            for seq, (version, reason) in enumerate(
                (("2.0.0", "NaN or Inf"), ("3.0.0", "latency p95")), start=1
            ):
                data = bundles[version].read_bytes()
                server.files[f"/b/{version}"] = data
                desired = desired_bundle(
                    device_id,
                    seq=seq,
                    version=version,
                    url=f"{server.url}/b/{version}",
                    bundle=data,
                )
                before = len(server.requests)
                watch.publish(topic(device_id, Channel.DESIRED), desired, retain=True)
                rolled = watch.wait_for(
                    _event(device_id, "update.rolled_back", version), timeout=30
                )
                event = decode(Channel.EVENTS, rolled.payload, device_id=device_id)
                assert isinstance(event, Event) and str(event.model) == f"digits@{version}"
                assert reason in event.detail and "digits@1.0.0" in event.detail, event.detail
                watch.wait_for(_serving(device_id, "digits@1.0.0"))  # (retained, or after)
                assert len(server.requests) == before + 1  # the new bundle only; v1 was cached
                pointer = json.loads((data_dir / POINTER_FILE).read_text())
                assert pointer["version"] == "1.0.0"
                assert not (data_dir / "artifacts" / "digits" / version).exists()
            assert not any(_event(device_id, "update.committed")(m) for m in watch.messages)
            # v1 still serves real inputs after both rollbacks.
            seen = len(watch.messages)
            watch.wait_for(
                lambda m: (
                    watch.messages.index(m) >= seen
                    and m.topic.endswith("/telemetry")
                    and json.loads(m.payload)["model"] == {"name": "digits", "version": "1.0.0"}
                    and json.loads(m.payload)["inference_count"] > 0
                )
            )
            assert agent.stop() == 0, agent.stderr[-10:]
        finally:
            agent.kill()


def test_kill_during_probation_serves_the_committed_model_and_retries(
    mqtt_url: str,
    device_id: str,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    digits_v1: Path,
    digits_v2: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    images = tmp_path / "in"
    digits_images(images, 6)
    data = bundle_of(digits_v2, tmp_path / "v2.tgz").read_bytes()
    with serve_bundles(TOKEN) as server, Watcher(mqtt_url, device_id) as watch:
        server.files["/b/v2"] = data
        config = tmp_path / "agent.toml"

        def write_config(probation: str) -> None:
            config.write_text(
                config_toml(
                    device_id=device_id,
                    data_dir=data_dir,
                    mqtt_url=mqtt_url,
                    server_url=server.url,
                    input_dir=images,
                    rate_hz=50.0,
                    interval_s=0.5,
                    extra=f"[probation]\n{probation}\n",
                ).replace('token = "device-token"', f'token = "{TOKEN}"')
            )

        write_config("inferences = 100000\nmax_s = 3600")  # stays on probation
        agent = AgentProcess(config)
        try:
            assert "model=digits@1.0.0" in agent.first_line()
            desired = desired_bundle(
                device_id, seq=1, version="2.0.0", url=f"{server.url}/b/v2", bundle=data
            )
            watch.publish(topic(device_id, Channel.DESIRED), desired, retain=True)

            def on_probation(m: Received) -> bool:
                if not m.topic.endswith("/state"):
                    return False
                s = decode(Channel.STATE, m.payload, device_id=device_id)
                return isinstance(s, State) and s.phase == "probation"

            watch.wait_for(on_probation, timeout=30)
            agent.kill()  # SIGKILL while v2 serves uncommitted
            pointer = json.loads((data_dir / POINTER_FILE).read_text())
            assert pointer["version"] == "1.0.0"

            write_config("inferences = 5")
            seen = len(watch.messages)
            agent = AgentProcess(config)
            # The committed model serves first; the retained desired state is then retried.
            assert agent.served_first() == "digits@1.0.0"
            watch.wait_for(
                lambda m: (
                    watch.messages.index(m) >= seen
                    and _event(device_id, "update.committed", "2.0.0")(m)
                ),
                timeout=30,
            )
            assert json.loads((data_dir / POINTER_FILE).read_text())["version"] == "2.0.0"
            assert [p for p, _ in server.requests] == ["/b/v2"]  # the retry reused the artifact
            assert agent.stop() == 0, agent.stderr[-10:]
        finally:
            agent.kill()
