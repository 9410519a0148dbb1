"""Payloads the contract accepts and the database would refuse are named before the write."""

from __future__ import annotations

from edgefleet.contract import Event, State, Telemetry
from fleet_server.messaging.screen import refusal


def test_counters_past_bigint_and_nul_in_text_are_named() -> None:
    ok = Telemetry(device_id="pi-1", seq=1, interval_s=1, model=None, inference_count=2**63 - 1)
    assert refusal(ok) is None
    for field in ("inference_count", "error_count", "dropped"):
        big = ok.model_copy(update={field: 2**63})
        assert refusal(big) == "out_of_range", field
    event = Event(device_id="pi-1", seq=2, event="input.error", detail="fine")
    assert refusal(event) is None
    assert refusal(event.model_copy(update={"detail": "a\x00b"})) == "nul_in_text"
    state = State(device_id="pi-1", seq=3, phase="idle", agent_version="1.0")
    assert refusal(state) is None
    for field in ("agent_version", "device_class", "last_error"):
        assert refusal(state.model_copy(update={field: "x\x00"})) == "nul_in_text", field
