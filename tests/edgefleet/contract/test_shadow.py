"""Schema 3: the shadow model in the desired state and its report in telemetry; what older
agents and servers read is unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgefleet.contract import (
    Channel,
    ContractError,
    DesiredState,
    ShadowReport,
    ShadowSpec,
    Telemetry,
    decode,
    encode,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "contract"


def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_v3_fixtures_decode_and_round_trip() -> None:
    desired = decode(Channel.DESIRED, _read("desired-v3.in.json"), device_id="pi-01")
    assert isinstance(desired, DesiredState) and desired.shadow is not None
    assert str(desired.shadow.ref) == "digits@1.3.0" and desired.shadow.sample_rate == 0.1
    assert desired.capture is not None and desired.capture.shadow_disagreement
    assert decode(Channel.DESIRED, encode(desired)) == desired
    telemetry = decode(Channel.TELEMETRY, _read("telemetry-v3.in.json"), device_id="pi-01")
    assert isinstance(telemetry, Telemetry) and telemetry.shadow is not None
    assert telemetry.shadow.agreement == 0.9 and telemetry.shadow.errors == {"inference": 1}
    assert decode(Channel.TELEMETRY, encode(telemetry)) == telemetry


@pytest.mark.parametrize("name", ["desired-v1.json", "desired-v2.in.json"])
def test_older_desired_states_read_and_write_as_before(name: str) -> None:
    raw = _read(name)
    desired = decode(Channel.DESIRED, raw)
    assert isinstance(desired, DesiredState) and desired.shadow is None
    assert "shadow" not in json.loads(encode(desired))  # an old agent refuses unknown fields
    if name == "desired-v1.json":
        assert encode(desired) == raw


def test_a_shadowless_v3_desired_state_marked_v2_is_what_a_v2_agent_reads() -> None:
    v3 = decode(Channel.DESIRED, _read("desired-v3.in.json"))
    assert isinstance(v3, DesiredState)
    old = v3.model_copy(update={"shadow": None, "schema_version": 2})
    data = json.loads(encode(old))
    assert data["schema_version"] == 2 and "shadow" not in data and "capture" in data


@pytest.mark.parametrize(
    ("name", "channel", "version"),
    [
        ("desired-v2.in.json", Channel.DESIRED, 2),
        ("desired-v1.json", Channel.DESIRED, 1),
        ("telemetry-v2.in.json", Channel.TELEMETRY, 2),
    ],
)
def test_an_older_payload_cannot_carry_a_shadow(name: str, channel: Channel, version: int) -> None:
    data = json.loads(_read(name))
    source = "desired-v3.in.json" if channel == Channel.DESIRED else "telemetry-v3.in.json"
    shadow = json.loads(_read(source))["shadow"]
    with pytest.raises(ContractError, match=f"shadow needs schema_version 3 .*says {version}"):
        decode(channel, json.dumps({**data, "shadow": shadow}).encode())


@pytest.mark.parametrize(
    "update",
    [
        {"sample_rate": 0},
        {"sample_rate": 1.01},
        {"cpu_budget": 0},
        {"cpu_budget": 2},
        {"sample_rate": "0.5"},
        {"size": 0},
        {"sha256": "x" * 64},
        {"url": ""},
        {"unknown": 1},
    ],
)
def test_bad_shadow_specs_are_refused(update: dict[str, Any]) -> None:
    spec = json.loads(_read("desired-v3.in.json"))["shadow"]
    with pytest.raises(ContractError):
        ShadowSpec.model_validate({**spec, **update})


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        ({"disagreements": 11}, "cannot exceed paired"),
        ({"paired": 0, "disagreements": 0}, "needs at least one paired"),
        ({"serving_p50_ms": 1.0}, "p50 latency cannot exceed its p95"),
        ({"agreement": 1.5}, "<= 1"),
        ({"mean_abs_conf_delta": -0.1}, ">= 0"),
        ({"paired": -1}, ">= 0"),
        ({"errors": {f"k{i}": 1 for i in range(33)}}, "length <= 32"),
        ({"task": "poetry"}, "Invalid enum value"),
    ],
)
def test_inconsistent_shadow_reports_are_refused(update: dict[str, Any], fragment: str) -> None:
    report = json.loads(_read("telemetry-v3.in.json"))["shadow"]
    with pytest.raises(ContractError, match=fragment):
        ShadowReport.model_validate_json(json.dumps({**report, **update}))
    with pytest.raises(ContractError):
        ShadowReport(**{**ShadowReport.model_validate(report).model_dump(), **update})
