"""The rollout state machine on SQLite and PostgreSQL: promotion, gates, pause, abort and
rollback, approval, restart and concurrent drivers, late joiners, rate limits and windows."""

from __future__ import annotations

import threading

import pytest

from fleet_server.services.errors import Conflict, NotFound, Unprocessable
from fleet_server.services.rollouts import service
from tests.fleet_server.rollout_harness import NEW, OLD, Harness

pytestmark = pytest.mark.integration


def _pass_stage(h: Harness, rollout_id: int, *, p95: float = 10.0) -> None:
    """Assigned devices commit and report healthy telemetry; the control group reports too.
    Four intervals: each device's first one on the new version is the update settling."""
    assigned = h.members(rollout_id, "assigned")
    h.commit(assigned)
    h.clock.advance(5)
    h.telemetry(assigned + h.members(rollout_id, "committed"), version=NEW, p95=p95, intervals=4)
    h.telemetry(h.members(rollout_id, "pending"), version=OLD)
    h.engine.tick()


def test_a_healthy_rollout_goes_canary_batches_completed(h: Harness) -> None:
    ids = h.add_devices(20)
    rollout = h.create()
    assert rollout.state == "running"
    assert [s.devices for s in rollout.stages] == [2, 10, 20]
    assert len(h.publisher.devices(NEW)) == 2  # the canary went out at creation

    for stage, expected in ((0, 10), (1, 20)):
        _pass_stage(h, rollout.id)
        assert h.rollout(rollout.id).stage == stage, "promoted before the soak"
        h.clock.advance(61)
        h.telemetry(h.members(rollout.id, "committed"), version=NEW)
        h.telemetry(h.members(rollout.id, "pending"), version=OLD)
        h.engine.tick()
        assert h.rollout(rollout.id).stage == stage + 1
        assert len(h.publisher.devices(NEW)) == expected

    _pass_stage(h, rollout.id)
    h.clock.advance(61)
    h.engine.tick()
    final = h.rollout(rollout.id)
    assert final.state == "completed", final.reason
    assert set(h.members(rollout.id, "committed")) == set(ids)
    assert h.decisions(rollout.id) == [
        ("created", 0),
        ("stage_passed", 0),
        ("stage_started", 1),
        ("stage_passed", 1),
        ("stage_started", 2),
        ("stage_passed", 2),
        ("completed", 2),
    ]
    passed = h.decision(rollout.id, "stage_passed")
    gates = {g["name"]: g for g in passed.evidence["gates"]}
    assert gates["latency_p95_ratio"]["status"] == "pass"
    assert gates["latency_p95_ratio"]["value"] == pytest.approx(1.0)
    assert passed.evidence["evidence"]["baseline"] == "control"
    assert len(h.publisher.sent) == 20  # each device got its desired state exactly once


def test_a_latency_regression_aborts_and_rolls_back_every_touched_device(h: Harness) -> None:
    ids = h.add_devices(20)
    rollout = h.create()
    canary = h.members(rollout.id, "assigned")
    _pass_stage(h, rollout.id, p95=31.0)  # 3.1x the control group's p95
    row = h.rollout(rollout.id)
    assert row.state == "aborting"
    failed = h.decision(rollout.id, "gate_failed")
    assert "latency_p95_ratio" in failed.reason
    latency = next(g for g in failed.evidence["gates"] if g["name"] == "latency_p95_ratio")
    assert latency["value"] == pytest.approx(3.1)
    # The canary is told to go back; nobody else was touched.
    for device_id in canary:
        assert h.desired(device_id) == OLD
    untouched = set(ids) - set(canary)
    assert all(h.desired(d) is None for d in untouched)
    assert set(h.members(rollout.id, "skipped")) == untouched

    h.report_running(canary, OLD)
    h.engine.tick()
    done = h.rollout(rollout.id)
    assert done.state == "aborted"
    assert set(h.members(rollout.id, "reverted")) == set(canary)


def test_failed_updates_fail_the_success_gate_early(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"canary_percent": 20})  # canary of 2
    canary = h.members(rollout.id, "assigned")
    h.fail(canary[:1])  # one of two failed: 50 % < 95 % is out of reach already
    h.engine.tick()
    assert "success_rate" in h.decision(rollout.id, "gate_failed").reason
    # Both canaries still run the old version (one never switched, one rolled itself back), so
    # the rollback is confirmed at once.
    assert h.rollout(rollout.id).state == "aborted"
    assert set(h.members(rollout.id, "reverted")) == set(canary)
    assert all(h.desired(d) == OLD for d in canary)


def test_update_timeout_counts_as_failure(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"update_timeout_s": 120})
    h.clock.advance(121)
    h.engine.tick()
    failed = h.decision(rollout.id, "gate_failed")
    assert "success_rate" in failed.reason
    assert failed.evidence["evidence"]["failed"] == 1
    assert h.rollout(rollout.id).state == "aborted"
    assert len(h.members(rollout.id, "reverted")) == 1


def test_pause_policy_then_operator_resume_and_abort(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"on_failure": "pause"})
    _pass_stage(h, rollout.id, p95=40.0)
    row = h.rollout(rollout.id)
    assert row.state == "paused"
    assert row.reason is not None and "latency_p95_ratio" in row.reason
    with pytest.raises(Conflict, match="cannot approve"):
        service.approve(h.engine, rollout.id, actor="op", reason="")
    service.resume(h.engine, rollout.id, actor="op", reason="looking at it")
    assert h.rollout(rollout.id).state in ("running", "paused")
    service.abort(h.engine, rollout.id, actor="op", reason="regression confirmed")
    assert h.rollout(rollout.id).state in ("aborting", "aborted")
    abort = h.decision(rollout.id, "abort")
    assert (abort.actor, abort.reason) == ("op", "regression confirmed")
    with pytest.raises(Conflict, match="cannot abort"):
        service.abort(h.engine, rollout.id, actor="op", reason="")


def test_operator_pause_stops_new_assignments(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"soak_s": 0})
    service.pause(h.engine, rollout.id, actor="op", reason="weekend")
    _pass_stage(h, rollout.id)
    h.clock.advance(10)
    h.engine.tick()
    assert h.rollout(rollout.id).state == "paused"
    assert len(h.publisher.devices(NEW)) == 1
    service.resume(h.engine, rollout.id, actor="op", reason="")
    h.engine.tick()
    assert h.rollout(rollout.id).stage == 1
    assert len(h.publisher.devices(NEW)) == 5


def test_approval_between_stages(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"require_approval": True, "soak_s": 0})
    _pass_stage(h, rollout.id)
    h.engine.tick()
    row = h.rollout(rollout.id)
    assert (row.state, row.stage) == ("awaiting_approval", 0)
    assert len(h.publisher.devices(NEW)) == 1
    service.approve(h.engine, rollout.id, actor="lead", reason="canary looks fine")
    row = h.rollout(rollout.id)
    assert (row.state, row.stage) == ("running", 1)
    assert len(h.publisher.devices(NEW)) == 5
    assert ("approve", 0) in h.decisions(rollout.id)


def test_a_restarted_engine_continues_and_never_applies_a_stage_twice(h: Harness) -> None:
    h.add_devices(20)
    rollout = h.create(strategy={"soak_s": 0})
    _pass_stage(h, rollout.id)
    # A server restart: a fresh engine (no memory) on the same database, several ticks.
    for _ in range(3):
        h.engine = h.new_engine()
        h.engine.tick()
    assert h.rollout(rollout.id).stage == 1
    assert len(h.publisher.devices(NEW)) == 10
    assert h.decisions(rollout.id).count(("stage_started", 1)) == 1
    assert len(h.publisher.sent) == 10


def test_concurrent_drivers_apply_each_stage_once(h: Harness) -> None:
    h.add_devices(20)
    rollout = h.create(strategy={"soak_s": 0})
    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    h.telemetry(canary, version=NEW)
    h.telemetry(h.members(rollout.id, "pending"), version=OLD)
    engines = [h.new_engine() for _ in range(4)]
    barrier = threading.Barrier(len(engines))

    def drive(engine: object) -> None:
        barrier.wait()
        for _ in range(3):
            engine.tick()  # type: ignore[attr-defined]

    threads = [threading.Thread(target=drive, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    decisions = h.decisions(rollout.id)
    assert decisions.count(("stage_passed", 0)) == 1
    assert decisions.count(("stage_started", 1)) == 1
    assert len(h.publisher.sent) == len(set(h.publisher.devices(NEW))) == 10


def test_devices_enrolled_during_a_rollout_join_it(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"soak_s": 0, "batches": [100]})
    late = h.add_devices(2, prefix="late")
    h.engine.tick()
    assert ("devices_joined", 0) not in h.decisions(rollout.id)  # the fleet is scanned every 5 s
    h.clock.advance(5)
    h.engine.tick()
    assert ("devices_joined", 0) in h.decisions(rollout.id)
    _pass_stage(h, rollout.id)
    h.engine.tick()
    assert h.rollout(rollout.id).stage == 1
    assert set(late) <= h.publisher.devices(NEW)
    _pass_stage(h, rollout.id)
    h.engine.tick()
    assert h.rollout(rollout.id).state == "completed"
    assert set(late) <= set(h.members(rollout.id, "committed"))


def test_rate_limit_spreads_assignments(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"canary_percent": 60, "batches": [100], "rate_per_minute": 2})
    assert len(h.publisher.devices(NEW)) == 2
    h.clock.advance(30)
    h.engine.tick()
    assert len(h.publisher.devices(NEW)) == 2
    h.clock.advance(31)
    h.engine.tick()
    assert len(h.publisher.devices(NEW)) == 4
    assert h.rollout(rollout.id).stage == 0


def test_maintenance_window_holds_assignments(h: Harness) -> None:
    h.add_devices(5)
    # The clock starts at 12:00 UTC; the window opens at 13:00.
    rollout = h.create(strategy={"maintenance_window": {"start": "13:00", "end": "14:00"}})
    assert h.publisher.sent == []
    h.clock.advance(3600)
    h.engine.tick()
    assert len(h.publisher.devices(NEW)) == 1
    assert h.rollout(rollout.id).state == "running"


def test_insufficient_evidence_pauses_at_the_stage_timeout(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"soak_s": 0, "stage_timeout_s": 600})
    h.commit(h.members(rollout.id, "assigned"))  # committed, but no telemetry at all
    h.engine.tick()
    assert h.rollout(rollout.id).state == "running"
    h.clock.advance(601)
    h.engine.tick()
    row = h.rollout(rollout.id)
    assert row.state == "paused"
    assert row.reason is not None and "error_rate" in row.reason


def test_devices_already_on_the_target_are_skipped(h: Harness) -> None:
    h.add_devices(3, running=NEW)
    fresh = h.add_devices(2)
    rollout = h.create(strategy={"soak_s": 0, "batches": [100], "canary_percent": 50})
    assert set(h.members(rollout.id, "skipped")).isdisjoint(fresh)
    assert len(h.members(rollout.id, "skipped")) == 3
    assert h.publisher.devices(NEW) <= set(fresh)


def test_confidence_collapse_fails_the_shift_gate(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create()
    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    h.telemetry(canary, version=NEW, histogram=[60, 30, 10, 0, 0, 0, 0, 0, 0, 0])
    h.telemetry(h.members(rollout.id, "pending"), version=OLD)
    h.engine.tick()
    assert "confidence_shift" in h.decision(rollout.id, "gate_failed").reason


def test_error_rate_increase_fails_its_gate(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create()
    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    h.telemetry(canary, version=NEW, errors=5)  # 5 %
    h.telemetry(h.members(rollout.id, "pending"), version=OLD)
    h.engine.tick()
    failed = h.decision(rollout.id, "gate_failed")
    gate = next(g for g in failed.evidence["gates"] if g["name"] == "error_rate")
    assert gate["value"] == pytest.approx(0.05)


def test_the_last_stage_uses_the_pre_update_baseline(h: Harness) -> None:
    ids = h.add_devices(4)
    h.telemetry(ids, version=OLD, p95=10.0)  # before the rollout
    h.clock.advance(60)
    rollout = h.create(strategy={"canary_percent": 100, "batches": [100], "soak_s": 0})
    h.clock.advance(5)
    h.commit(h.members(rollout.id, "assigned"))
    h.clock.advance(5)
    h.telemetry(ids, version=NEW, p95=12.0)
    h.engine.tick()
    row = h.rollout(rollout.id)
    assert row.state == "completed", row.reason
    evaluation = h.decision(rollout.id, "stage_passed").evidence
    assert evaluation["evidence"]["baseline"] == "pre-update"
    latency = next(g for g in evaluation["gates"] if g["name"] == "latency_p95_ratio")
    assert latency["value"] == pytest.approx(1.2)


def test_creation_refuses_bad_requests_and_changes_nothing(h: Harness) -> None:
    h.add_devices(3)
    with pytest.raises(NotFound, match="not found"):
        h.create(version="9.9.9")
    with pytest.raises(Unprocessable, match="matches no device"):
        h.create(selector={"tags": ["nobody-has-this"]})
    with pytest.raises(NotFound, match="unknown device"):
        h.create(selector={"device_ids": ["ghost-1"]})
    first = h.create()
    with pytest.raises(Conflict, match="another active rollout"):
        h.create()
    from sqlmodel import Session

    with Session(h.db) as session:
        assert [r.id for r in service.list_rollouts(session, state=None, limit=10)] == [first.id]


def test_unsigned_models_are_refused(h: Harness) -> None:
    from sqlmodel import Session

    from fleet_server.models import ModelVersion

    h.add_devices(2)
    with Session(h.db) as session:
        row = session.get(ModelVersion, (h.model, NEW))
        assert row is not None
        row.signed = False  # carries a signature no trusted key verified
        session.add(row)
        session.commit()
    with pytest.raises(Unprocessable, match="unverified signature.*no trusted keys"):
        h.create()
    with Session(h.db) as session:
        row = session.get(ModelVersion, (h.model, NEW))
        assert row is not None
        row.signature_key_id = row.signature_value = None  # no signature at all
        session.add(row)
        session.commit()
    with pytest.raises(Unprocessable, match="not signed"):
        h.create()


def test_report_has_decisions_devices_and_a_differential(h: Harness) -> None:
    h.add_devices(10, device_class="rpi4")
    h.add_devices(10, device_class="rpi5")
    rollout = h.create()
    canary = h.report_classes(rollout.id)
    assert sorted(canary) == ["rpi4", "rpi5"]  # the canary samples every class
    _pass_stage(h, rollout.id, p95=11.0)
    from sqlmodel import Session

    with Session(h.db) as session:
        report = service.report(session, rollout.id, now=h.clock.now)
    assert [d.action for d in report.decisions][:1] == ["created"]
    assert len(report.devices) == 20
    diff = report.differential
    assert diff["baseline"] == "control"
    assert set(diff["latency_by_class"]) == {"rpi4", "rpi5"}
    ratios = [c["p95_ratio"] for c in diff["latency_by_class"].values()]
    assert all(r == pytest.approx(1.1) for r in ratios)
    assert diff["confidence_tv_distance"] == pytest.approx(0.0)


def test_pinned_devices_are_left_alone(h: Harness) -> None:
    from sqlmodel import Session

    from fleet_server.models import Device

    ids = h.add_devices(4)
    with Session(h.db) as session:
        device = session.get(Device, ids[0])
        assert device is not None
        device.pinned_name, device.pinned_version = h.model, OLD
        session.add(device)
        session.commit()
    rollout = h.create(strategy={"canary_percent": 100, "batches": [100], "soak_s": 0})
    assert ids[0] in h.members(rollout.id, "skipped")
    assert ids[0] not in h.publisher.devices(NEW)
    assert len(h.publisher.devices(NEW)) == 3


def test_a_device_on_probation_is_not_counted_as_committed(h: Harness) -> None:
    from edgefleet.contract import ModelRef, State

    h.add_devices(10)
    rollout = h.create()
    canary = h.members(rollout.id, "assigned")
    h.send(
        [
            State(
                device_id=d,
                seq=h._next(d),
                phase="probation",
                running=ModelRef(name=h.model, version=NEW),
                agent_version="test",
            )
            for d in canary
        ]
    )
    h.clock.advance(5)
    h.engine.tick()
    assert h.members(rollout.id, "assigned") == canary  # still updating, not committed
    h.fail(canary)  # the probation then rolls it back
    h.engine.tick()
    assert "success_rate" in h.decision(rollout.id, "gate_failed").reason


def _status(h: Harness, ids: list[str], status: str) -> None:
    from edgefleet.contract import Status

    h.send([Status(device_id=d, status=status, ts=h.clock.now) for d in ids])  # type: ignore[arg-type]


def test_devices_offline_for_a_moment_do_not_fail_the_offline_gate(h: Harness) -> None:
    """A broker or server restart takes every device offline for the seconds it needs to
    reconnect (once in CI: ``offline 0.8 vs 0.1`` right after a server restart, an abort)."""
    h.add_devices(20)
    rollout = h.create(gates={"offline": {"grace_s": 30}})
    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    _status(h, canary, "offline")
    h.clock.advance(20)
    h.engine.tick()
    assert h.rollout(rollout.id).state == "running"
    _status(h, canary, "online")  # reconnected within the grace
    _pass_stage(h, rollout.id)
    h.clock.advance(61)
    h.telemetry(h.members(rollout.id, "committed"), version=NEW)
    h.telemetry(h.members(rollout.id, "pending"), version=OLD)
    h.engine.tick()
    assert h.rollout(rollout.id).stage == 1, h.rollout(rollout.id).reason


def test_devices_that_stay_offline_past_the_grace_fail_the_offline_gate(h: Harness) -> None:
    h.add_devices(20)
    rollout = h.create(gates={"offline": {"grace_s": 30}})
    canary = h.members(rollout.id, "assigned")
    h.commit(canary)
    _status(h, canary, "offline")
    h.clock.advance(29)
    h.engine.tick()
    assert h.rollout(rollout.id).state == "running"
    h.clock.advance(2)
    h.engine.tick()
    assert h.rollout(rollout.id).state == "aborting"
    failed = h.decision(rollout.id, "gate_failed")
    assert "offline 1 vs 0.1" in failed.reason, failed.reason
    gates = {g["name"]: g for g in failed.evidence["gates"]}
    assert gates["offline"]["status"] == "fail" and gates["offline"]["value"] == 1.0
    assert "2 of 2 offline for ≥ 30 s" in gates["offline"]["detail"]
