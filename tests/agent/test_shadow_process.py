"""A real agent process on the real broker serving digits, given shadows through its retained
desired state: a faithful copy agrees on every paired input; a shuffled-label model disagrees
and its disagreements land in the capture queue within the policy's budget; a shadow that
fails to load is reported and serving goes on as before; removing the shadow unloads it. Every
shadow is downloaded and verified from the bundle server like a serving model; the serving
model never changes."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.store import POINTER_FILE
from edgefleet.contract import (
    CapturePolicy,
    Channel,
    DesiredModel,
    DesiredState,
    Event,
    SampleMeta,
    ShadowSpec,
    Telemetry,
    decode,
    encode,
    parse_topic,
    topic,
)
from tests.agent.helpers import Received, Watcher, config_toml, rehash, serve_bundles
from tests.agent.test_agent_process import TOKEN, AgentProcess, device_id  # noqa: F401 (fixture)
from tests.utils.artifacts import build_digits_artifact, bundle_of, digits_images

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _telemetry(m: Received, device: str) -> Telemetry | None:
    _device, channel = parse_topic(m.topic)
    if channel != Channel.TELEMETRY or not m.payload:
        return None
    payload = decode(channel, m.payload, device_id=device)
    assert isinstance(payload, Telemetry)
    return payload


def _shadow_of(version: str, min_paired: int = 1) -> object:
    def check(t: Telemetry | None) -> bool:
        return (
            t is not None
            and t.shadow is not None
            and t.shadow.model.version == version
            and t.shadow.paired >= min_paired
        )

    return check


def _captured(data_dir: Path) -> list[SampleMeta]:
    metas = []
    for path in sorted((data_dir / "capture").glob("*.json")):
        metas.append(SampleMeta.model_validate_json(path.read_bytes()))
    return metas


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_agent_runs_shadows_without_touching_what_it_serves(
    mqtt_url: str,
    device_id: str,  # noqa: F811 (the fixture)
    tmp_path: Path,
    digits_v1: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    images = tmp_path / "in"
    digits_images(images, 20)
    copy = build_digits_artifact(tmp_path / "copy", version="3.0.0")
    shuffled = build_digits_artifact(tmp_path / "shuf", version="9.0.0", shuffled_labels=True)
    broken = build_digits_artifact(tmp_path / "broken", version="4.0.0")
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    rehash(broken)  # a bundle that verifies, and a model that cannot load
    bundles = {
        v: bundle_of(a, tmp_path / f"{v}.tar.gz").read_bytes()
        for v, a in (("1.0.0", digits_v1), ("3.0.0", copy), ("9.0.0", shuffled), ("4.0.0", broken))
    }
    with serve_bundles(TOKEN) as server, Watcher(mqtt_url, device_id) as watch:
        for version, data in bundles.items():
            server.files[f"/bundles/{version}"] = data
        config = tmp_path / "agent.toml"
        text = config_toml(
            device_id=device_id,
            data_dir=data_dir,
            mqtt_url=mqtt_url,
            server_url=server.url,  # captures stay queued: this server takes no uploads
            input_dir=images,
            rate_hz=100.0,
            interval_s=0.5,
        ).replace('token = "device-token"', f'token = "{TOKEN}"')
        config.write_text(text)

        def ref(version: str) -> dict[str, object]:
            data = bundles[version]
            return {
                "name": "digits",
                "version": version,
                "url": f"{server.url}/bundles/{version}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }

        def desire(seq: int, shadow: str | None) -> None:
            spec = ShadowSpec(**ref(shadow), sample_rate=1.0, cpu_budget=1.0) if shadow else None  # type: ignore[arg-type]
            state = DesiredState(
                device_id=device_id,
                seq=seq,
                model=DesiredModel(**ref("1.0.0")),  # type: ignore[arg-type]
                capture=CapturePolicy(shadow_disagreement=True, max_per_hour=3),
                shadow=spec,
            )
            watch.publish(topic(device_id, Channel.DESIRED), encode(state), retain=True)

        def telemetry_after(check: object, since: int) -> Telemetry:
            found = watch.wait_for(
                lambda m: (
                    watch.messages.index(m) >= since and check(_telemetry(m, device_id))  # type: ignore[operator]
                ),
                timeout=45,
                what="telemetry",
            )
            t = _telemetry(found, device_id)
            assert t is not None
            return t

        desire(1, "3.0.0")
        agent = AgentProcess(config)
        try:
            agent.first_line()
            # A faithful copy: every paired input agrees; nothing is captured.
            t = telemetry_after(_shadow_of("3.0.0", min_paired=5), 0)
            assert t.shadow is not None and t.shadow.agreement == 1.0
            assert t.shadow.task == "classification" and t.shadow.mean_abs_conf_delta == 0.0
            assert t.shadow.serving_p95_ms is not None and t.shadow.shadow_p95_ms is not None
            assert t.shadow.shadow_cpu_ms > 0 and t.model is not None
            assert str(t.model) == "digits@1.0.0"
            assert (data_dir / "artifacts" / "digits" / "3.0.0" / "manifest.json").exists()
            assert server.requests[0] == ("/bundles/3.0.0", f"Bearer {TOKEN}")
            assert _captured(data_dir) == []

            # A shuffled-label shadow: it disagrees on every input; three captures (the budget).
            mark = len(watch.messages)
            desire(2, "9.0.0")
            t = telemetry_after(_shadow_of("9.0.0", min_paired=5), mark)
            assert t.shadow is not None and t.shadow.agreement == 0.0
            assert t.shadow.disagreements == t.shadow.paired
            assert str(t.model) == "digits@1.0.0" and t.error_count == 0
            _eventually(lambda: len(_captured(data_dir)) >= 3)
            metas = _captured(data_dir)
            assert len(metas) == 3
            assert {m.reason for m in metas} == {"shadow_disagreement"}
            assert {str(m.model) for m in metas} == {"digits@1.0.0"}
            assert not (data_dir / "artifacts" / "digits" / "3.0.0").exists()  # old shadow gone

            # Removed: no shadow in the telemetry any more, its artifact gone.
            mark = len(watch.messages)
            desire(3, None)
            t = telemetry_after(lambda t: t is not None and t.inference_count > 0, mark)
            t = telemetry_after(lambda t: t is not None and t.shadow is None, mark)
            assert str(t.model) == "digits@1.0.0"
            _eventually(lambda: not (data_dir / "artifacts" / "digits" / "9.0.0").exists())
            _eventually(lambda: any("shadow removed" in line for line in agent.stderr))

            # A shadow that cannot load: reported as the shadow's error; serving goes on.
            mark = len(watch.messages)
            desire(4, "4.0.0")
            t = telemetry_after(
                lambda t: (
                    t is not None and t.shadow is not None and "load_failed" in t.shadow.errors
                ),
                mark,
            )
            assert t.shadow is not None and str(t.shadow.model) == "digits@4.0.0"
            t = telemetry_after(lambda t: t is not None and t.inference_count > 0, mark)
            assert str(t.model) == "digits@1.0.0"
            assert t.shadow is None or t.shadow.paired == 0
            assert not (data_dir / "artifacts" / "digits" / "4.0.0").exists()
        finally:
            agent.stop()
            watch.publish(topic(device_id, Channel.DESIRED), b"", retain=True)
        # The device's events and state are about what it serves: no update of a shadow.
        for m in watch.messages:
            _device, channel = parse_topic(m.topic)
            if channel == Channel.EVENTS and m.payload:
                event = decode(channel, m.payload, device_id=device_id)
                assert isinstance(event, Event)
                assert event.model is None or event.model.version == "1.0.0", event
    assert json.loads((data_dir / POINTER_FILE).read_text())["version"] == "1.0.0"
