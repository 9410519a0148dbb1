"""A rollout's shadow stage with a real agent process on the real broker: the engine gives the
device the candidate as its shadow (the desired state it published is what the agent gets), the
agent's telemetry goes through the server's ingest write path, and the shadow gates judge it. A
faithful candidate (a copy, or a static int8 of the serving model) passes (agreement ≥ 0.98)
and the canary may start; a shuffled-label one is
stopped in shadow, and the device served every request with the old model (the candidate
answered none)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from agent.store import POINTER_FILE
from edgefleet.contract import (
    Channel,
    DesiredModel,
    DesiredState,
    ShadowSpec,
    Telemetry,
    decode,
    encode,
    parse_topic,
    topic,
)
from fleet_server.db import make_engine, migrate
from fleet_server.models import Device, DeviceShadow, ModelVersion
from fleet_server.services.rollouts.evaluation import EVALUATE_EVERY_S
from tests.agent.helpers import Watcher, config_toml, serve_bundles
from tests.agent.test_agent_process import TOKEN, AgentProcess, device_id  # noqa: F401 (fixture)
from tests.fleet_server.rollout_harness import NEW, OLD, Harness
from tests.utils.artifacts import (
    build_digits_artifact,
    bundle_of,
    digits_images,
    int8_digits_artifact,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("kind", ["faithful", "int8", "shuffled"])
def test_the_shadow_stage_judges_a_real_agents_shadow(
    mqtt_url: str,
    device_id: str,  # noqa: F811 (the fixture)
    tmp_path: Path,
    digits_v1: Path,
    kind: str,
) -> None:
    """faithful: the same weights under another version; int8: onnxruntime's static int8 of
    the serving model (agreement 0.997 on the held-out digits); shuffled: a broken retrain."""
    db = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(db)
    h = Harness(db)
    shuffled = kind == "shuffled"
    if kind == "int8":
        candidate = int8_digits_artifact(digits_v1, tmp_path / "cand", version=NEW)
    else:
        candidate = build_digits_artifact(tmp_path / "cand", version=NEW, shuffled_labels=shuffled)
    bundles = {
        OLD: bundle_of(digits_v1, tmp_path / "old.tar.gz").read_bytes(),
        NEW: bundle_of(candidate, tmp_path / "new.tar.gz").read_bytes(),
    }
    with Session(db) as session:
        for version, data in bundles.items():  # the registry holds the real bundles
            row = session.get(ModelVersion, ("digits", version))
            assert row is not None
            row.sha256, row.size = hashlib.sha256(data).hexdigest(), len(data)
            session.add(row)
        session.add(
            Device(
                device_id=device_id,
                token_hash="0" * 64,
                device_class="rpi4",
                tags=[h.tag],
                online=True,
                running_name="digits",
                running_version=OLD,
                desired_name="digits",
                desired_version=OLD,
            )
        )
        session.commit()

    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / OLD)
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": OLD}))
    images = tmp_path / "in"
    digits_images(images, 20)
    served: set[str] = set()
    with serve_bundles(TOKEN) as server, Watcher(mqtt_url, device_id) as watch:
        for version, data in bundles.items():
            server.files[f"/bundles/{version}"] = data

        def ref(version: str) -> dict[str, Any]:
            data = bundles[version]
            return {
                "name": "digits",
                "version": version,
                "url": f"{server.url}/bundles/{version}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }

        def forward() -> None:
            """The engine's newest desired state for the device, as the agent receives it
            (bundle URLs on the test's bundle server)."""
            state = h.publisher.sent[-1]
            assert state.model is not None and state.model.version == OLD
            shadow = None
            if state.shadow is not None:
                shadow = ShadowSpec(
                    **ref(state.shadow.version),
                    sample_rate=state.shadow.sample_rate,
                    cpu_budget=state.shadow.cpu_budget,
                )
            desired = DesiredState(
                device_id=device_id,
                seq=state.seq,
                model=DesiredModel(**ref(state.model.version)),
                shadow=shadow,
            )
            watch.publish(topic(device_id, Channel.DESIRED), encode(desired), retain=True)

        rollout = h.create(
            strategy={
                "canary_percent": 100,
                "batches": [100],
                "shadow": {
                    "shadow_s": 1,
                    "min_samples": 30,
                    "sample_rate": 1.0,
                    "cpu_budget": 1.0,
                    # Timing on a shared CI machine is noise; the latency gate has its own tests.
                    "max_latency_ratio": 100,
                },
            }
        )
        assert rollout.state == "shadowing"
        forward()
        config = tmp_path / "agent.toml"
        config.write_text(
            config_toml(
                device_id=device_id,
                data_dir=data_dir,
                mqtt_url=mqtt_url,
                server_url=server.url,
                input_dir=images,
                rate_hz=100.0,
                interval_s=0.5,
            ).replace('token = "device-token"', f'token = "{TOKEN}"')
        )
        agent = AgentProcess(config)
        try:
            agent.first_line()
            h.clock.advance(2)  # shadow_s has passed: the gates decide on the evidence alone
            seen = 0
            deadline = time.monotonic() + 60
            while h.rollout(rollout.id).state == "shadowing":
                assert time.monotonic() < deadline, h.rollout(rollout.id).last_evaluation
                fresh = watch.messages[seen:]
                seen += len(fresh)
                batch = []
                for m in fresh:
                    _device, channel = parse_topic(m.topic)
                    if channel == Channel.TELEMETRY and m.payload:
                        t = decode(channel, m.payload, device_id=device_id)
                        assert isinstance(t, Telemetry)
                        if t.model is not None and t.inference_count:
                            served.add(str(t.model))
                        batch.append(t)
                if batch:
                    h.send(batch)
                h.clock.advance(EVALUATE_EVERY_S)  # the shadow gates are read at this pace
                h.engine.tick()
                time.sleep(0.1)
        finally:
            agent.stop()
            watch.publish(topic(device_id, Channel.DESIRED), b"", retain=True)

    final = h.rollout(rollout.id)
    assert served == {f"digits@{OLD}"}, "the candidate answered requests"
    assert h.desired(device_id) == OLD  # never changed in the shadow stage
    last = h.publisher.sent[-1]
    assert last.shadow is None and last.model is not None and last.model.version == OLD
    with Session(db) as session:
        assert session.exec(select(DeviceShadow)).all() == []
    evidence = h.decision(rollout.id, "gate_failed" if shuffled else "shadow_passed").evidence
    group = evidence["shadow"]["device_classes"]["rpi4"]
    assert group["paired"] >= 30
    if shuffled:
        assert final.state == "aborted", final.reason
        assert "shadow_agreement (class rpi4)" in (final.reason or "")
        assert group["agreement"] < 0.5
        assert h.publisher.devices(NEW) == set()
    else:
        assert final.state == "running", final.reason
        assert group["agreement"] >= 0.98
    db.dispose()
