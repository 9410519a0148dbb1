"""A canary is never passed for want of a baseline (issue #14): when the devices it updated ran
an older version, gates without that version's telemetry yet wait for it — on a busy server the
canary's soak can end before its old-version telemetry is ingested, and a 3x slower version once
passed the canary as "no old-version latency to compare with" (then failed a stage later, with
ten devices to roll back instead of two). Real engine, SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.fleet_server.rollout_harness import NEW, OLD, Harness

pytestmark = pytest.mark.integration


def _gates(h: Harness, rollout_id: int) -> dict[str, dict[str, object]]:
    evaluation = h.rollout(rollout_id).last_evaluation or {}
    return {str(g["name"]): g for g in evaluation.get("gates", [])}


def test_a_slow_canary_waits_for_its_baseline_and_then_fails(h: Harness) -> None:
    h.add_devices(20)
    rollout = h.create(strategy={"soak_s": 0})
    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    h.clock.advance(5)
    h.telemetry(canary, version=NEW, p95=30.0, intervals=4)  # 3x slower; no baseline ingested
    h.engine.tick()
    row = h.rollout(rollout.id)
    assert (row.state, row.stage) == ("running", 0), row.reason
    gates = _gates(h, rollout.id)
    assert gates["latency_p95_ratio"]["status"] == "wait", gates["latency_p95_ratio"]
    assert "replaced version" in str(gates["latency_p95_ratio"]["detail"])
    assert gates["confidence_shift"]["status"] == "wait"
    assert (h.rollout(rollout.id).last_evaluation or {})["evidence"]["replaced"] is True

    # The control group's telemetry arrives: the regression is judged and the canary aborted.
    h.telemetry(h.members(rollout.id, "pending"), version=OLD, p95=10.0)
    h.clock.advance(6)
    h.engine.tick()
    row = h.rollout(rollout.id)
    assert row.state == "aborting", row.reason
    assert "latency_p95_ratio" in (row.reason or "")
    assert len(h.members(rollout.id, "skipped")) == 18


def test_a_first_install_has_no_baseline_to_wait_for(h: Harness) -> None:
    h.add_devices(10, running=None)
    rollout = h.create(strategy={"soak_s": 0})
    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    h.clock.advance(5)
    h.telemetry(canary, version=NEW, p95=30.0, intervals=4)
    h.engine.tick()
    assert h.rollout(rollout.id).stage == 1
    gates = _gates(h, rollout.id)
    assert gates["latency_p95_ratio"]["status"] == "skipped"
    assert (h.rollout(rollout.id).last_evaluation or {})["evidence"]["replaced"] is False


def test_a_later_stage_without_a_baseline_leans_on_the_stage_that_had_one(h: Harness) -> None:
    # The last stage has no control group left; devices whose history is outside the window
    # have no pre-update baseline either. The canary passed latency on a baseline: enough.
    h.add_devices(10)
    rollout = h.create(strategy={"soak_s": 0, "batches": [100]})
    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    h.clock.advance(5)
    h.telemetry(canary, version=NEW, intervals=4)
    h.telemetry(h.members(rollout.id, "pending"), version=OLD)
    h.engine.tick()
    assert h.rollout(rollout.id).stage == 1
    rest = h.members(rollout.id, "assigned")
    h.commit(rest)
    h.clock.advance(5)
    h.telemetry(rest + canary, version=NEW, intervals=4)
    h.engine.tick()
    row = h.rollout(rollout.id)
    assert row.state == "completed", row.reason
    gates = _gates(h, rollout.id)
    assert gates["latency_p95_ratio"]["status"] == "skipped", gates["latency_p95_ratio"]
