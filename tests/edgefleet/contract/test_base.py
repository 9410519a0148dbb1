"""The contract's base struct API and its pydantic bridge."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pydantic
import pytest

from edgefleet.contract import (
    SCHEMA_VERSION,
    ContractError,
    DesiredModel,
    Event,
    LatencySummary,
    ModelRef,
    Preprocessing,
    Telemetry,
)
from edgefleet.contract.base import _DECODING
from edgefleet.contract.manifest import ResizeSpec
from edgefleet.contract.pydantic_types import DeviceId, ModelName, PreprocessingField

TS = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)


def _event(**changes: object) -> Event:
    fields: dict[str, object] = {"device_id": "pi-01", "seq": 1, "ts": TS, "event": "input.error"}
    return Event(**{**fields, **changes})  # type: ignore[arg-type]


def test_model_dump_modes_exclude_and_exclude_none() -> None:
    event = _event(model=ModelRef(name="digits", version="1.0.0"))
    python = event.model_dump()
    assert python["ts"] == TS and python["model"] == {"name": "digits", "version": "1.0.0"}
    assert python["progress"] is None
    as_json = event.model_dump(mode="json", exclude={"detail", "kind"})
    assert as_json["ts"] == "2026-11-23T10:00:00.123456Z"
    assert "detail" not in as_json and "kind" not in as_json
    assert "progress" not in event.model_dump(exclude_none=True)
    telemetry = Telemetry(
        device_id="pi-01",
        seq=2,
        ts=TS,
        interval_s=1.0,
        model=None,
        inference_count=0,
        latency_ms=LatencySummary(p50=1.0, p95=2.0),
    )
    dumped = telemetry.model_dump(exclude_none=True)
    assert "model" not in dumped and dumped["latency_ms"] == {"p50": 1.0, "p95": 2.0}


def test_model_dump_json_and_validate_json_round_trip() -> None:
    event = _event(detail="x")
    assert json.loads(event.model_dump_json()) == event.model_dump(mode="json")
    head = f'{{\n  "schema_version": {SCHEMA_VERSION},\n'
    assert event.model_dump_json(indent=2).startswith(head)
    assert Event.model_validate_json(event.model_dump_json()) == event
    assert Event.model_validate(event.model_dump()) == event
    with pytest.raises(ContractError, match=r"^invalid Event: Expected `int` >= 0 - at `\$.seq`$"):
        Event.model_validate({**event.model_dump(), "seq": -5})
    with pytest.raises(ContractError, match="^invalid Event: Input data was truncated$"):
        Event.model_validate_json(b"{")


def test_model_copy_validates_again() -> None:
    event = _event()
    assert event.model_copy(update={"progress": 0.5}).progress == 0.5
    assert event.model_copy() == event and event.model_copy() is not event
    with pytest.raises(ContractError, match=r"Expected `float` <= 1.0 - at `\$.progress`"):
        event.model_copy(update={"progress": 2.0})
    with pytest.raises(ContractError, match="std values must be non-zero"):
        Preprocessing().model_copy(update={"std": [0.0]})


def test_construction_flag_is_reset_after_errors() -> None:
    with pytest.raises(ContractError):
        _event(seq=-1)
    with pytest.raises(ContractError):
        Event.model_validate({"nope": 1})
    assert _DECODING.get() is False
    with pytest.raises(ContractError, match=r"- at `\$.device_id`"):
        _event(device_id="UPPER")


def test_structs_are_frozen_and_refs_hashable() -> None:
    ref = ModelRef(name="digits", version="1.0.0")
    assert {ref: 1}[ModelRef(name="digits", version="1.0.0")] == 1
    assert str(ref) == "digits@1.0.0"
    with pytest.raises(AttributeError):
        ref.name = "other"  # type: ignore[misc]
    desired = DesiredModel(name="x", version="1", url="http://s/b", sha256="a" * 64, size=1)
    assert desired.ref == ModelRef(name="x", version="1")


class _Options(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    device: DeviceId
    name: ModelName | None = None
    preprocessing: PreprocessingField | None = None


def test_pydantic_bridge_validates_with_the_contract() -> None:
    options = _Options.model_validate(
        {"device": "pi-01", "preprocessing": {"color": "gray", "resize": {"width": 8, "height": 8}}}
    )
    assert isinstance(options.preprocessing, Preprocessing)
    assert options.preprocessing.resize == ResizeSpec(width=8, height=8)
    assert options.model_dump(mode="json")["preprocessing"]["resize"]["mode"] == "stretch"
    assert _Options.model_validate_json(options.model_dump_json()) == options
    with pytest.raises(pydantic.ValidationError, match="invalid device id 'BAD ID': must match"):
        _Options(device="BAD ID")
    with pytest.raises(pydantic.ValidationError, match="invalid model name"):
        _Options(device="pi", name="../x")
    with pytest.raises(pydantic.ValidationError, match=r"Expected `float` > 0.0 - at `\$.scale`"):
        _Options.model_validate({"device": "pi", "preprocessing": {"scale": 0}})
    with pytest.raises(pydantic.ValidationError, match="mean needs 1 or 1 values"):
        _Options.model_validate(
            {"device": "pi", "preprocessing": {"color": "gray", "mean": [1, 2]}}
        )


def test_pydantic_bridge_json_schema_is_inline() -> None:
    schema = _Options.model_json_schema()
    text = json.dumps(schema)
    assert '"#/$defs/Preprocessing"' not in text and "#/$defs/ResizeSpec" not in text
    pre = schema["properties"]["preprocessing"]["anyOf"][0]
    assert pre["properties"]["layout"]["enum"] == ["flat", "nchw", "nhwc"]
    assert pre["properties"]["scale"]["exclusiveMinimum"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("device_id", "pi-01\n"), ("model", {"name": "digits\n", "version": "1"})],
)
def test_patterns_match_the_whole_string(field: str, value: object) -> None:
    """msgspec matches with re.search, where '$' also matches before a final newline."""
    with pytest.raises(ContractError, match=r"matching regex .*\\\\Z' - at `\$\."):
        _event(**{field: value})
    with pytest.raises(ContractError, match=r"matching regex .*\\\\Z. - at `\$\.sha256`"):
        DesiredModel.model_validate(
            {"name": "x", "version": "1", "url": "u", "sha256": "a" * 64 + "\n", "size": 1}
        )
