"""Topics and payloads: layout, QoS/retain table, round-trips and hostile input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edgefleet.contract import (
    CHANNELS,
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    Channel,
    ContractError,
    DesiredState,
    Event,
    Result,
    State,
    Status,
    Telemetry,
    decode,
    encode,
    parse_topic,
    topic,
)
from edgefleet.contract.errors import NonFiniteNumberError
from edgefleet.contract.payloads import PAYLOAD_TYPES
from edgefleet.contract.topics import device_filter, fleet_filter, shared_filter


def test_topic_layout_one_level_per_device() -> None:
    assert topic("pi-01", Channel.TELEMETRY) == "edgefleet/v1/pi-01/telemetry"
    assert device_filter("pi-01") == "edgefleet/v1/pi-01/#"
    assert fleet_filter(Channel.STATE) == "edgefleet/v1/+/state"
    assert shared_filter("ingest", Channel.EVENTS) == "$share/ingest/edgefleet/v1/+/events"
    assert parse_topic("edgefleet/v1/pi-01/desired") == ("pi-01", Channel.DESIRED)


def test_qos_and_retain_table() -> None:
    retained = {c for c, spec in CHANNELS.items() if spec.retained}
    assert retained == {Channel.STATE, Channel.STATUS, Channel.DESIRED}
    assert all(spec.qos == 1 for c, spec in CHANNELS.items() if c != Channel.RESULTS)
    assert CHANNELS[Channel.RESULTS].qos == 0  # the default; the sink may ask for 1
    assert [c for c, s in CHANNELS.items() if not s.from_device] == [Channel.DESIRED]


@pytest.mark.parametrize("device_id", ["", "UPPER", "a/b", "a+b", "a#", "x" * 64, "-lead", "a b"])
def test_topic_rejects_ids_that_break_acls(device_id: str) -> None:
    with pytest.raises(ContractError):
        topic(device_id, Channel.STATE)


@pytest.mark.parametrize(
    "value",
    [
        "edgefleet/v2/pi/state",
        "edgefleet/v1/pi/state/extra",
        "edgefleet/v1/pi/unknown",
        "other/v1/pi/state",
        "edgefleet/v1/+/state",
        "edgefleet/v1//state",
    ],
)
def test_parse_topic_rejects_foreign_topics(value: str) -> None:
    with pytest.raises(ContractError):
        parse_topic(value)


def _examples() -> list[Any]:
    ts = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    model = {"name": "digits", "version": "1.0.0"}
    return [
        Telemetry(
            device_id="pi-01",
            seq=7,
            ts=ts,
            interval_s=5,
            model=model,
            inference_count=100,
            error_count=1,
            errors={"input.decode": 1},
            latency_ms={"p50": 0.2, "p95": 0.4, "p99": 0.5, "max": 0.9},
            system={"rss_mb": 80.5},
            confidence_histogram=[0] * 9 + [100],
        ),
        State(device_id="pi-01", seq=8, ts=ts, phase="serving", running=model, agent_version="0.1"),
        Event(device_id="pi-01", seq=9, ts=ts, event="update.downloading", progress=0.5),
        Status(device_id="pi-01", status="offline", ts=ts),
        DesiredState(
            device_id="pi-01",
            seq=3,
            ts=ts,
            model={
                "name": "digits",
                "version": "1.0.0",
                "url": "http://server/api/v1/models/digits/1.0.0/bundle",
                "sha256": "a" * 64,
                "size": 10,
            },
        ),
        Result(
            device_id="pi-01",
            seq=10,
            ts=ts,
            model=model,
            input_id="cam[3]",
            task="detection",
            output={"detections": [{"label": "cat", "score": 0.8, "box": [1.0, 2.0, 3.0, 4.0]}]},
        ),
        Result(device_id="pi-01", seq=11, ts=ts, model=None, input_id="x.png", error="corrupt"),
    ]


@pytest.mark.parametrize("payload", _examples(), ids=lambda p: type(p).__name__)
def test_payload_round_trip(payload: Any) -> None:
    channel = next(c for c, t in PAYLOAD_TYPES.items() if isinstance(payload, t))
    raw = encode(payload)
    data = json.loads(raw)
    assert data["schema_version"] == SCHEMA_VERSION == 3 and data["device_id"] == "pi-01"
    assert decode(channel, raw, device_id="pi-01") == payload


def test_payload_bad_inputs_each_get_one_line() -> None:
    telemetry = json.loads(encode(_examples()[0]))
    cases: list[tuple[bytes, str]] = [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (
            json.dumps({**telemetry, "seq": -1}).encode(),
            "invalid telemetry payload: Expected `int` >= 0 - at `$.seq`",
        ),
        (json.dumps({**telemetry, "extra": 1}).encode(), "unknown field `extra`"),
        (
            json.dumps({k: v for k, v in telemetry.items() if k != "seq"}).encode(),
            "missing required field `seq`",
        ),
        (
            json.dumps({**telemetry, "ts": "2026-11-23T12:00:00"}).encode(),
            "Expected `datetime` with a timezone component - at `$.ts`",
        ),
        (json.dumps({**telemetry, "schema_version": 4}).encode(), "newer"),
        (b'{"x": "' + b"y" * MAX_PAYLOAD_BYTES + b'"}', "limit"),
    ]
    for raw, fragment in cases:
        with pytest.raises(ContractError) as info:
            decode(Channel.TELEMETRY, raw)
        assert fragment in str(info.value), (fragment, str(info.value))
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "fragment",
    [
        '"system": {"cpu_percent": NaN}',
        '"system": {"cpu_percent": -Infinity}',
        '"latency_ms": {"p50": Infinity, "p95": 1.0}',
        '"latency_ms": {"p50": 1.0, "p95": 1e999}',
    ],
)
def test_non_finite_numbers_are_refused(fragment: str) -> None:
    """Not JSON, refused by msgspec, accepted by ``json.loads`` (the fallback path) and
    refused by PostgreSQL: decode refuses them with their own error type."""
    raw = encode(Telemetry(device_id="pi-1", seq=1, interval_s=1, model=None, inference_count=1))
    data = json.loads(raw)
    data.pop("system"), data.pop("latency_ms")
    hostile = json.dumps(data)[:-1] + ", " + fragment + "}"
    with pytest.raises(NonFiniteNumberError, match="telemetry payload: .*(JSON number|range)"):
        decode(Channel.TELEMETRY, hostile.encode(), device_id="pi-1")


def test_payload_cannot_speak_for_another_device() -> None:
    raw = encode(_examples()[0])
    with pytest.raises(ContractError, match="does not match topic device"):
        decode(Channel.TELEMETRY, raw, device_id="pi-02")


def test_payload_kind_must_match_channel() -> None:
    state = encode(_examples()[1])
    with pytest.raises(ContractError):
        decode(Channel.TELEMETRY, state)


def test_topics_are_documented() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "contract.md").read_text()
    for channel, spec in CHANNELS.items():
        assert f"`{channel.value}`" in doc
        assert f"QoS {spec.qos}" in doc
