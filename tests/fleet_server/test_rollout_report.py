"""The rollout report reads what the gates decided (the stored evaluation); it does not gather
telemetry and decide again, so a report shows the numbers the rollout was actually judged on."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from fleet_server.services.rollouts import service
from tests.fleet_server.rollout_harness import NEW, OLD, Harness

pytestmark = pytest.mark.integration


def test_the_report_shows_the_stored_verdicts_not_fresh_telemetry(h: Harness) -> None:
    h.add_devices(6, device_class="rpi4")
    h.add_devices(6, device_class="rpi5")
    rollout = h.create()
    with Session(h.db) as session:
        before = service.report(session, rollout.id, now=h.clock.now).differential
        row = h.rollout(rollout.id)
        row.last_evaluation = None  # a rollout not judged yet: nothing to show, nothing made up
        unjudged = service.differential(session, row, [], now=h.clock.now)
    assert before["baseline"] == "none" and before["latency_by_class"] == {}  # no telemetry yet
    assert {g["status"] for g in before["gates"]} <= {"wait", "skipped"}
    assert unjudged["gates"] == [] and unjudged["evaluated_at"] is None
    assert unjudged["error_rate_increase"] is None and unjudged["latency_by_class"] == {}

    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    h.clock.advance(5)
    h.telemetry(canary, version=NEW, p95=12.0, errors=2)
    h.telemetry(h.members(rollout.id, "pending"), version=OLD, p95=10.0)
    h.engine.tick()  # the canary finished: a full evaluation, stored
    stored = h.rollout(rollout.id).last_evaluation
    assert stored is not None
    gates = {g["name"]: g for g in stored["gates"]}

    # Telemetry after the evaluation, which no gate has judged: the report must not show it.
    h.clock.advance(1)
    h.telemetry(
        canary, version=NEW, p95=90.0, errors=50, histogram=[90, 10, 0, 0, 0, 0, 0, 0, 0, 0]
    )
    with Session(h.db) as session:
        diff = service.report(session, rollout.id, now=h.clock.now).differential
    assert diff["gates"] == stored["gates"]
    assert diff["evaluated_at"] == stored["ts"] and diff["evaluation_age_s"] == pytest.approx(1.0)
    assert diff["error_rate_increase"] == gates["error_rate"]["value"] == pytest.approx(0.02)
    assert diff["confidence_tv_distance"] == gates["confidence_shift"]["value"]
    assert diff["new"] == stored["evidence"]["new"] and diff["old"] == stored["evidence"]["old"]
    assert set(diff["latency_by_class"]) == {"rpi4", "rpi5"}
    assert all(c["p95_ratio"] == pytest.approx(1.2) for c in diff["latency_by_class"].values())
