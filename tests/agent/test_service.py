"""The service's hand-offs, without a broker: desired-state intake and the inference loop."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.engine import BackendOptions, load_model
from agent.inputs import InputItem
from agent.pipeline import prepare
from agent.service import AgentService
from agent.state import Serving
from edgefleet.contract import DesiredState, encode
from tests.agent.helpers import config_toml
from tests.agent.sources import ListSource
from tests.utils.artifacts import digits_images
from tests.utils.net import free_port


@pytest.fixture
def service(tmp_path: Path) -> AgentService:
    # A broker port nobody listens on: these tests never start the transport.
    text = config_toml(data_dir=tmp_path / "data", mqtt_url=f"mqtt://127.0.0.1:{free_port()}")
    svc = AgentService(parse_config(text))
    events: list[dict[str, Any]] = []
    offered: list[DesiredState] = []

    def record(kind: str, **kw: Any) -> None:
        events.append({"kind": kind, **kw})

    svc.publisher.event = record  # type: ignore[method-assign]
    svc.updater.offer = offered.append  # type: ignore[method-assign]
    svc.events, svc.offered = events, offered  # type: ignore[attr-defined]
    return svc


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[" * 60_000, "nested too deeply"),
        (b'{"a": "' + b"x" * 70_000 + b'"}', "the limit is 65536"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (json.dumps({"schema_version": 99}).encode(), "newer than this EdgeFleet"),
        (json.dumps({"schema_version": 1, "kind": "desired"}).encode(), "invalid desired"),
        (encode(DesiredState(device_id="other", seq=1, model=None)), "does not match topic"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_hostile_desired_payloads_are_rejected(
    service: AgentService, payload: bytes, reason: str
) -> None:
    service._on_desired("edgefleet/v1/dev-1/desired", payload, True)
    events = service.events  # type: ignore[attr-defined]
    assert [e["kind"] for e in events] == ["payload.rejected"]
    assert reason in events[0]["detail"] and events[0]["detail"].startswith("desired: ")
    assert service.offered == []  # type: ignore[attr-defined]
    telemetry = service.collector.flush(seq=1, model=None, classifier=False)
    assert telemetry.errors == {"payload_rejected": 1}


def test_valid_and_cleared_desired(service: AgentService) -> None:
    desired = DesiredState(device_id="dev-1", seq=3, model=None)
    service._on_desired("edgefleet/v1/dev-1/desired", encode(desired), True)
    service._on_desired("edgefleet/v1/dev-1/desired", b"", True)  # retained message cleared
    assert service.offered == [desired]  # type: ignore[attr-defined]
    assert service.events == []  # type: ignore[attr-defined]


def test_pipeline_counts_results_and_bad_inputs(
    service: AgentService, digits_v1: Path, tmp_path: Path
) -> None:
    model = load_model(digits_v1, options=BackendOptions())
    service.slot.swap(Serving.of(model))
    images = digits_images(tmp_path / "in", 5)
    items = [InputItem(source=path.name, data=path.read_bytes()) for path in images]
    items.append(InputItem(source="bad.png", data=b"\x89PNG broken"))
    items.append(InputItem(source="bad.npy", data=b"\x93NUMPY garbage"))
    stop = threading.Event()
    worker = threading.Thread(target=service.pipeline.run, args=(stop,))
    worker.start()
    service.pipeline.feed(ListSource(items), stop)
    deadline = time.monotonic() + 10
    while service.pipeline.handled < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    telemetry = service.collector.flush(seq=1, model=model.ref, classifier=True)
    assert telemetry.inference_count == 5
    assert telemetry.errors == {"corrupt_image": 1, "bad_tensor": 1}
    assert sum(telemetry.confidence_histogram) == 5
    assert telemetry.latency_ms is not None and telemetry.latency_ms.max > 0


def test_job_queued_before_an_unload_is_counted_not_served(
    service: AgentService, digits_v1: Path, tmp_path: Path
) -> None:
    serving = Serving.of(load_model(digits_v1, options=BackendOptions()))
    image = digits_images(tmp_path / "in", 1)[0]
    job = prepare(InputItem(source="x", data=image.read_bytes()), serving)
    service.slot.swap(None)
    service.pipeline.process(job)
    telemetry = service.collector.flush(seq=1, model=None, classifier=False)
    assert telemetry.errors == {"no_model": 1} and telemetry.inference_count == 0
