"""The ``mqtt`` result sink against a real broker (embedded amqtt and Mosquitto): what crosses
the wire (topic, QoS, retained flag, payload), drop-oldest while offline, the 64 KiB cap."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.engine import BackendOptions, load_model
from agent.inputs import InputItem
from agent.pipeline import prepare
from agent.plugin_config import MqttSinkConfig
from agent.seq import SequenceCounter
from agent.sinks import SinkContext, create_sink
from agent.sinks.mqtt import MqttResultSink
from agent.state import Serving
from edgefleet.contract import MAX_PAYLOAD_BYTES, Channel, Result, decode, topic
from edgefleet.mqtt import BrokerAddress, MqttTransport
from tests.agent.helpers import Watcher
from tests.utils.artifacts import digits_images
from tests.utils.net import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def device_id(mqtt_url: str) -> Iterator[str]:
    """A fresh device id; retained state/status of the agent process are cleared afterwards."""
    value = f"rs-{secrets.token_hex(4)}"
    yield value
    with Watcher(mqtt_url, value, name="cleanup") as cleaner:
        for channel in (Channel.STATE, Channel.STATUS):
            cleaner.publish(topic(value, channel), b"", retain=True)


@pytest.fixture
def transport(mqtt_url: str, device_id: str) -> Iterator[MqttTransport]:
    t = MqttTransport(BrokerAddress.from_url(mqtt_url), client_id=f"agent-{device_id}")
    yield t
    t.close()


def _results(watcher: Watcher, device_id: str, n: int) -> list[Any]:
    name = topic(device_id, Channel.RESULTS)
    return watcher.wait_count(lambda m: m.topic == name, n, timeout=20)


@pytest.mark.parametrize("qos", [0, 1])
def test_results_cross_the_wire_as_contract_payloads(
    mqtt_url: str,
    transport: MqttTransport,
    device_id: str,
    digits_v1: Path,
    tmp_path: Path,
    qos: int,
    request: pytest.FixtureRequest,
) -> None:
    serving = Serving.of(load_model(digits_v1, options=BackendOptions()))
    [image] = digits_images(tmp_path / "in", 1)
    job = prepare(InputItem(image.name, image.read_bytes()), serving)
    [result] = serving.results(
        serving.model.infer({serving.preprocess.tensor.name: job.tensor}), [job.geometry]
    )
    result["source"] = image.name
    seq = SequenceCounter(tmp_path / "data")
    context = SinkContext(device_id=device_id, transport=transport, next_seq=seq.next)
    sink = create_sink(MqttSinkConfig(qos=qos), context=context)
    with Watcher(mqtt_url, device_id) as watcher:
        transport.start(wait=10)
        sink.write(result)
        sink.write({"source": "broken.png", "error": "cannot decode image", "kind": "corrupt"})
        received = _results(watcher, device_id, 2)
        sink.close()
    # Mosquitto delivers at min(published, subscribed) QoS, so the watcher (QoS 1) sees the
    # sink's QoS; amqtt delivers at the subscription's QoS whatever was published.
    delivered = qos if request.node.callspec.params["mqtt_url"] == "mosquitto" else 1
    assert [(m.qos, m.retain) for m in received] == [(delivered, False), (delivered, False)]
    good, bad = (decode(Channel.RESULTS, m.payload, device_id=device_id) for m in received)
    assert isinstance(good, Result) and isinstance(bad, Result)
    assert good.kind == "result" and good.device_id == device_id
    assert str(good.model) == "digits@1.0.0" and good.task == "classification"
    assert good.input_id == image.name and good.error is None
    assert good.output is not None
    top = good.output["top_k"][0]
    label = image.name.split("label")[1].split(".")[0]
    assert top["label"] == label  # the digit the file is named after
    assert bad.output is None and bad.error == "cannot decode image" and bad.model is None
    assert bad.input_id == "broken.png"
    assert bad.seq == good.seq + 1


def test_offline_sink_keeps_the_newest_and_counts_drops(
    mqtt_url: str, transport: MqttTransport, device_id: str, tmp_path: Path
) -> None:
    drops: list[int] = []
    sink = MqttResultSink(
        MqttSinkConfig(qos=1, max_queued=3),
        transport=transport,
        device_id=device_id,
        next_seq=SequenceCounter(tmp_path).next,
        on_drop=drops.append,
    )
    for i in range(5):  # not connected yet: the sink holds at most 3
        sink.write({"source": f"in-{i}", "model": "digits@1.0.0", "outputs": {"y": [i]}})
    assert sink.queued == 3 and sink.stats.dropped == 2 and sum(drops) == 2
    with Watcher(mqtt_url, device_id) as watcher:
        transport.start(wait=10)
        received = _results(watcher, device_id, 3)
        sink.close()
    payloads = [decode(Channel.RESULTS, m.payload, device_id=device_id) for m in received]
    assert [p.input_id for p in payloads] == ["in-2", "in-3", "in-4"]  # type: ignore[union-attr]
    assert sink.stats.published == 3


def test_oversized_and_hostile_results_stay_within_the_contract(tmp_path: Path) -> None:
    # Never started (a port nobody listens on): encode() needs no broker.
    transport = MqttTransport(
        BrokerAddress(host="127.0.0.1", port=free_port()), client_id="offline-results"
    )
    sink = MqttResultSink(
        MqttSinkConfig(),
        transport=transport,
        device_id="dev-1",
        next_seq=SequenceCounter(tmp_path).next,
    )
    try:
        big = {"source": "x", "model": "m@1", "task": "raw", "outputs": {"y": [0.5] * 20_000}}
        raw = sink.encode(big)
        assert len(raw) <= MAX_PAYLOAD_BYTES
        message = decode(Channel.RESULTS, raw, device_id="dev-1")
        assert isinstance(message, Result) and message.output is not None
        assert message.output["omitted_bytes"] > MAX_PAYLOAD_BYTES and sink.stats.oversized == 1
        hostile = {
            "source": "s" * 5000,
            "model": "Not A/Model@x",
            "task": "'; DROP TABLE",
            "error": "e" * 10_000,
        }
        message = decode(Channel.RESULTS, sink.encode(hostile), device_id="dev-1")
        assert isinstance(message, Result)
        assert len(message.input_id) == 512 and message.model is None and message.task is None
        assert message.error is not None and len(message.error) == 2000
        with pytest.raises(ValueError):  # not JSON-able: the sender thread counts it as failed
            sink.encode({"source": "x", "outputs": {"y": np.zeros(2)}})
    finally:
        sink.close()


def test_agent_process_publishes_results_with_an_mqtt_sink(
    mqtt_url: str, device_id: str, tmp_path: Path, digits_v1: Path
) -> None:
    """``edgefleet agent run`` with ``[sink] type = "mqtt"``: a batch of images becomes one
    Result per image (a corrupt one included) on the device's results topic."""
    import json
    import shutil

    from agent.store import POINTER_FILE
    from tests.agent.helpers import config_toml
    from tests.agent.test_agent_process import AgentProcess

    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    images = digits_images(tmp_path / "in", 6)
    (tmp_path / "in" / "zz-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    text = config_toml(device_id=device_id, data_dir=data_dir, mqtt_url=mqtt_url)
    text += f'\n[input]\ntype = "batch"\npath = "{tmp_path / "in"}"\n'
    text += '\n[sink]\ntype = "mqtt"\nqos = 1\n'
    config = tmp_path / "agent.toml"
    config.write_text(text)
    with Watcher(mqtt_url, device_id) as watcher:
        agent = AgentProcess(config)
        try:
            assert "running" in agent.first_line()
            received = _results(watcher, device_id, 7)
        finally:
            assert agent.stop() == 0, agent.stderr[-5:]
    payloads = [decode(Channel.RESULTS, m.payload, device_id=device_id) for m in received]
    by_input = {p.input_id: p for p in payloads if isinstance(p, Result)}
    assert sorted(by_input) == sorted([p.name for p in images] + ["zz-corrupt.png"])
    for path in images:
        result = by_input[path.name]
        assert result.output is not None and str(result.model) == "digits@1.0.0"
        assert result.output["top_k"][0]["label"] == path.stem[-1]
    assert by_input["zz-corrupt.png"].error is not None
    seqs = [p.seq for p in payloads]
    assert len(set(seqs)) == len(seqs)  # one counter with telemetry/events/state
