"""Schema version 2: input statistics, capture policy, sample metadata; version 1 still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edgefleet.contract import (
    CAPTURE_REASONS,
    SCHEMA_VERSION,
    CapturePolicy,
    Channel,
    ContractError,
    DesiredState,
    InputStats,
    SampleMeta,
    Telemetry,
    decode,
    encode,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "contract"


def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_schema_version_is_3_and_v2_fixtures_decode() -> None:
    assert SCHEMA_VERSION == 3
    telemetry = decode(Channel.TELEMETRY, _read("telemetry-v2.in.json"), device_id="pi-01")
    assert isinstance(telemetry, Telemetry) and telemetry.inputs is not None
    assert telemetry.inputs.channel_histograms == [[600, 20, 20, 0]]
    assert telemetry.class_counts == {"0": 60, "7": 40}
    assert decode(Channel.TELEMETRY, encode(telemetry)) == telemetry
    desired = decode(Channel.DESIRED, _read("desired-v2.in.json"))
    assert isinstance(desired, DesiredState) and desired.capture is not None
    assert desired.capture.classes == ["7"] and desired.capture.max_side == 320
    meta = SampleMeta.model_validate_json(_read("sample-meta.in.json"))
    assert meta.reason == "low_confidence" and meta.input_stats is not None
    assert SampleMeta.model_validate_json(meta.model_dump_json()) == meta


def test_a_v1_telemetry_is_read_as_it_is_and_written_back_byte_for_byte() -> None:
    telemetry = decode(Channel.TELEMETRY, _read("telemetry.in.json"))
    assert isinstance(telemetry, Telemetry)
    assert telemetry.schema_version == 1
    assert telemetry.inputs is None and telemetry.class_counts == {}
    assert encode(telemetry) == _read("telemetry.out.json")


def test_a_v1_desired_state_is_what_a_v1_agent_reads() -> None:
    raw = _read("desired-v1.json")
    desired = decode(Channel.DESIRED, raw)
    assert isinstance(desired, DesiredState) and desired.schema_version == 1
    assert encode(desired) == raw  # no "capture" key: a v1 agent refuses unknown fields
    # The server can mark a capture-less v2 desired state as v1 for an old agent.
    v2 = decode(Channel.DESIRED, _read("desired-v2.in.json"))
    assert isinstance(v2, DesiredState)
    old = v2.model_copy(update={"capture": None, "schema_version": 1})
    assert "capture" not in json.loads(encode(old))


@pytest.mark.parametrize(
    ("name", "channel", "field", "value"),
    [
        ("telemetry.in.json", Channel.TELEMETRY, "class_counts", {"a": 1}),
        ("desired-v1.json", Channel.DESIRED, "capture", {"random": 0.5}),
    ],
)
def test_a_v1_payload_cannot_carry_v2_fields(
    name: str, channel: Channel, field: str, value: Any
) -> None:
    data = json.loads(_read(name))
    with pytest.raises(ContractError, match=f"{field} needs schema_version 2"):
        decode(channel, json.dumps({**data, field: value}).encode())


def _stats(**update: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "samples": 4,
        "channel_mean": [0.1, 0.2, 0.3],
        "channel_std": [0.1, 0.1, 0.1],
        "channel_histograms": [[1, 2], [3, 4], [5, 6]],
        "outside_reference": 1,
    }
    return {**base, **update}


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        ({"channel_std": [0.1]}, "one entry per channel"),
        ({"channel_histograms": [[1, 2], [3], [5, 6]]}, "same number of bins"),
        ({"channel_std": [0.1, -0.1, 0.1]}, "must not be negative"),
        ({"outside_reference": 5}, "cannot exceed samples"),
        ({"samples": 0}, "Expected `int` >= 1"),
        ({"channel_mean": [0.0] * 65}, "length <= 64"),
        ({"channel_histograms": [[0] * 257] * 3}, "length <= 256"),
        ({"channel_histograms": [[-1, 2], [3, 4], [5, 6]]}, ">= 0"),
    ],
)
def test_input_stats_bounds(update: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ContractError, match="invalid InputStats") as info:
        InputStats.model_validate(_stats(**update))
    assert fragment in str(info.value)
    with pytest.raises(ContractError):
        InputStats(**_stats(**update))


def test_telemetry_class_counts_bounded() -> None:
    data = json.loads(_read("telemetry-v2.in.json"))
    too_many = {str(i): 1 for i in range(1001)}
    with pytest.raises(ContractError, match="class_counts"):
        decode(Channel.TELEMETRY, json.dumps({**data, "class_counts": too_many}).encode())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("low_confidence", 1.5),
        ("margin", -0.1),
        ("random", 2.0),
        ("jpeg_quality", 0),
        ("jpeg_quality", 101),
        ("max_side", 4),
        ("max_per_hour", -1),
        ("classes", [""]),
        ("unknown", 1),
    ],
)
def test_capture_policy_bounds(field: str, value: Any) -> None:
    with pytest.raises(ContractError, match="invalid CapturePolicy"):
        CapturePolicy.model_validate({field: value})


def test_tightened_is_the_stricter_of_both_and_symmetric_in_effect() -> None:
    server = CapturePolicy(
        low_confidence=0.6,
        margin=0.2,
        outside_reference=0.3,
        classes=["cat", "dog"],
        random=0.05,
        shadow_disagreement=True,
        max_per_hour=100,
        max_per_day=1000,
        max_bytes_per_day=10**8,
        max_side=1024,
        jpeg_quality=95,
    )
    device = CapturePolicy(
        low_confidence=0.4,
        margin=None,
        outside_reference=0.5,
        classes=["dog", "bird"],
        random=0.5,
        max_per_hour=10,
        max_per_day=5000,
        max_bytes_per_day=10**6,
        max_side=320,
        jpeg_quality=99,
    )
    both = server.tightened(device)
    assert both == CapturePolicy(
        low_confidence=0.4,  # captures when top-1 < t: the smaller t captures less
        margin=None,  # a reason one side turns off stays off
        outside_reference=0.5,  # captures when score > t: the larger t captures less
        classes=["dog"],
        random=0.05,
        shadow_disagreement=False,
        max_per_hour=10,
        max_per_day=1000,
        max_bytes_per_day=10**6,
        max_side=320,
        jpeg_quality=95,
    )
    assert device.tightened(server).model_dump(exclude={"classes"}) == both.model_dump(
        exclude={"classes"}
    )
    assert server.tightened(server) == server


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        ({"sample_id": "short"}, "sample_id"),
        ({"sample_id": "has/slash-0001"}, "sample_id"),
        ({"reason": "because"}, "reason"),
        ({"content_type": "image/png"}, "content_type"),
        ({"sha256": "B" * 64}, "sha256"),
        ({"size": 0}, "size"),
        ({"outputs": [0.0] * 1001}, "outputs"),
        ({"captured_at": "2026-11-23T10:00:00"}, "timezone"),
        ({"confidence": 1.2}, "confidence"),
        ({"device_id": "Pi/01"}, "device_id"),
    ],
)
def test_sample_meta_refuses_bad_fields(update: dict[str, Any], fragment: str) -> None:
    data = json.loads(_read("sample-meta.in.json"))
    with pytest.raises(ContractError, match="invalid SampleMeta") as info:
        SampleMeta.model_validate_json(json.dumps({**data, **update}))
    assert fragment in str(info.value)


def test_capture_reasons_are_the_shared_vocabulary() -> None:
    assert CAPTURE_REASONS == (
        "low_confidence",
        "margin",
        "outside_reference",
        "class",
        "random",
        "shadow_disagreement",
    )


def test_capture_policy_json_schema_describes_every_field() -> None:
    schema = msgspec.json.schema(CapturePolicy)
    props = schema["$defs"]["CapturePolicy"]["properties"]
    missing = [name for name, prop in props.items() if "description" not in json.dumps(prop)]
    assert not missing
    for struct in (InputStats, SampleMeta):
        props = msgspec.json.schema(struct)["$defs"][struct.__name__]["properties"]
        # msgspec's schema drops the description of an optional Struct (input_stats); the
        # field still has one in the source.
        missing = [k for k, p in props.items() if "description" not in json.dumps(p)]
        assert missing in ([], ["input_stats"]), (struct, missing)
