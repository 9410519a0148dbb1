"""The shadow stage before the canary, on SQLite and PostgreSQL: the rollout's devices get the
candidate as their shadow (their desired model stays the old one), the shadow gates read the
stored shadow reports per device class, and the stage passes to the canary, waits, or aborts
with no device's desired model ever changed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlmodel import Session, col, select

from fleet_server.models import Device, DeviceShadow, ShadowReportRow
from fleet_server.services.rollouts import RolloutCreate, service
from fleet_server.services.rollouts.evaluation import EVALUATE_EVERY_S
from fleet_server.services.rollouts.state import TransitionRefused
from tests.fleet_server.rollout_harness import NEW, OLD, Harness

pytestmark = pytest.mark.integration

SHADOW = {"shadow_s": 60, "min_samples": 50, "sample_rate": 0.5}


def _fleet(h: Harness) -> tuple[list[str], list[str]]:
    """Four rpi4 and two jetson devices serving the old version (assigned, as agents are)."""
    pis = h.add_devices(4, device_class="rpi4")
    jetsons = h.add_devices(2, device_class="jetson", prefix="j")
    with Session(h.db) as session:
        for device in session.exec(select(Device).where(col(Device.device_id).in_(pis + jetsons))):
            device.desired_name, device.desired_version = h.model, OLD
            session.add(device)
        session.commit()
    return pis, jetsons


_seq: dict[str, int] = {}


def _reports(
    h: Harness,
    ids: list[str],
    *,
    paired: int,
    disagreements: int = 0,
    errors: int = 0,
    ratio: float = 1.2,
    at_offset_s: float = 0.0,
) -> None:
    with Session(h.db) as session:
        for device_id in ids:
            _seq[device_id] = _seq.get(device_id, 0) + 1
            session.add(
                ShadowReportRow(
                    device_id=device_id,
                    seq=_seq[device_id],
                    ts=h.clock.now + timedelta(seconds=at_offset_s),
                    model_name=h.model,
                    model_version=NEW,
                    paired=paired,
                    skipped=0,
                    disagreements=disagreements,
                    figures={
                        "serving_p95_ms": 10.0,
                        "shadow_p95_ms": 10.0 * ratio,
                        "errors": {"inference": errors} if errors else {},
                    },
                )
            )
        session.commit()


def _shadow_rows(h: Harness) -> dict[str, tuple[str, float]]:
    with Session(h.db) as session:
        return {
            r.device_id: (r.model_version, r.sample_rate)
            for r in session.exec(select(DeviceShadow))
        }


def _desired_versions(h: Harness, ids: list[str]) -> set[str | None]:
    return {h.desired(d) for d in ids}


def _start(h: Harness, **strategy: Any) -> tuple[int, list[str], list[str]]:
    pis, jetsons = _fleet(h)
    rollout = h.create(strategy={"shadow": {**SHADOW, **strategy}})
    assert rollout.state == "shadowing" and rollout.stage_name == "shadow"
    assert _shadow_rows(h) == dict.fromkeys(pis + jetsons, (NEW, 0.5))
    # The shadow went out with the old serving model: the candidate answers nothing.
    assert {s.device_id for s in h.publisher.sent if s.shadow is not None} == set(pis + jetsons)
    assert all(s.model is not None and s.model.version == OLD for s in h.publisher.sent)
    return rollout.id, pis, jetsons


def test_a_passing_shadow_removes_the_shadows_then_the_canary_starts(h: Harness) -> None:
    rollout_id, pis, jetsons = _start(h)
    _reports(h, pis, paired=20)  # 80 paired on rpi4
    _reports(h, jetsons, paired=30, disagreements=0)  # 60 on jetson
    h.clock.advance(EVALUATE_EVERY_S)
    h.engine.tick()
    assert h.rollout(rollout_id).state == "shadowing", "passed before shadow_s"
    h.clock.advance(61)
    h.engine.tick()
    rollout = h.rollout(rollout_id)
    assert (rollout.state, rollout.stage) == ("running", 0), rollout.reason
    assert _shadow_rows(h) == {}
    last = {}
    for state in h.publisher.sent:
        last[state.device_id] = state
    assert all(s.shadow is None and s.model and s.model.version == OLD for s in last.values())
    assert h.publisher.devices(NEW) == set()

    h.engine.tick()  # the canary goes out as today
    assert len(h.members(rollout_id, "assigned")) == 1
    assert len(h.publisher.devices(NEW)) == 1
    actions = [a for a, _ in h.decisions(rollout_id)]
    assert actions[:3] == ["created", "shadow_started", "shadow_passed"]

    with Session(h.db) as session:
        report = service.report(session, rollout_id, now=h.clock.now)
    shadow = report.differential["shadow"]
    assert shadow["outcome"] == "passed"
    assert shadow["device_classes"]["rpi4"]["paired"] == 80
    assert shadow["device_classes"]["jetson"]["agreement"] == 1.0
    gates = {(g["name"], g["detail"]): g["status"] for g in shadow["gates"]}
    assert gates[("shadow_latency_ratio", "class jetson")] == "pass"
    assert len(gates) == 6


def test_low_agreement_in_one_class_aborts_with_no_desired_model_changed(h: Harness) -> None:
    rollout_id, pis, jetsons = _start(h)
    _reports(h, pis, paired=20)
    _reports(h, jetsons, paired=30, disagreements=3)  # agreement 0.9 on jetson
    h.clock.advance(EVALUATE_EVERY_S)
    h.engine.tick()  # a clear failure does not wait for shadow_s
    rollout = h.rollout(rollout_id)
    assert rollout.state == "aborted", rollout.reason
    assert "shadow_agreement (class jetson) 0.9" in (rollout.reason or "")
    assert "rpi4" not in (rollout.reason or "")
    assert _shadow_rows(h) == {}
    assert _desired_versions(h, pis + jetsons) == {OLD}
    assert h.publisher.devices(NEW) == set()
    assert set(h.members(rollout_id, "skipped")) == set(pis + jetsons)
    failed = h.decision(rollout_id, "gate_failed")
    assert (
        failed.stage == 0 and failed.evidence["shadow"]["device_classes"]["jetson"]["paired"] == 60
    )
    with Session(h.db) as session:
        report = service.report(session, rollout_id, now=h.clock.now)
    assert report.differential["shadow"]["outcome"] == "failed"


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [("latency", "shadow_latency_ratio (class rpi4) 2"), ("errors", "shadow_error_rate")],
)
def test_slow_or_failing_shadows_abort(h: Harness, kind: str, fragment: str) -> None:
    rollout_id, pis, jetsons = _start(h)
    if kind == "latency":
        _reports(h, pis, paired=20, ratio=2.0)
    else:
        _reports(h, pis, paired=20, errors=2)  # 8 / 88
    _reports(h, jetsons, paired=30)
    h.clock.advance(EVALUATE_EVERY_S)
    h.engine.tick()
    rollout = h.rollout(rollout_id)
    assert rollout.state == "aborted" and fragment in (rollout.reason or ""), rollout.reason
    assert _desired_versions(h, pis + jetsons) == {OLD} and _shadow_rows(h) == {}


def test_too_few_samples_waits_with_a_reason_and_old_reports_do_not_count(h: Harness) -> None:
    rollout_id, pis, jetsons = _start(h)
    _reports(h, pis, paired=20)
    _reports(h, jetsons, paired=10)  # 20 < 50 on jetson
    _reports(h, jetsons, paired=1000, at_offset_s=-5)  # before the stage started
    h.clock.advance(120)
    h.engine.tick()
    rollout = h.rollout(rollout_id)
    assert rollout.state == "shadowing" and rollout.last_evaluation is not None
    gates = {(g["name"], g["detail"]): g for g in rollout.last_evaluation["gates"]}
    assert gates[("shadow_agreement", "class jetson")]["status"] == "wait"
    assert gates[("shadow_agreement", "class jetson")]["samples"] == 20
    assert gates[("shadow_agreement", "class rpi4")]["status"] == "pass"
    assert [a for a, _ in h.decisions(rollout_id)] == ["created", "shadow_started"]
    assert len(_shadow_rows(h)) == 6 and h.publisher.devices(NEW) == set()


def test_the_shadow_stage_is_evaluated_at_the_engines_pace_and_at_its_end(h: Harness) -> None:
    """Like the other stages, the shadow gates are read at most every EVALUATE_EVERY_S (each
    evaluation reads every member's shadow reports), plus at once when shadow_s runs out."""
    rollout_id, pis, jetsons = _start(h)  # the first evaluation ran at creation
    first = h.rollout(rollout_id).last_evaluation
    assert first is not None and first["stage"] == -1
    _reports(h, pis, paired=20)
    _reports(h, jetsons, paired=30, disagreements=3)  # a clear failure, waiting to be read
    for _ in range(3):
        h.engine.tick()
    h.clock.advance(EVALUATE_EVERY_S - 0.5)
    h.engine.tick()
    row = h.rollout(rollout_id)
    assert row.state == "shadowing" and row.last_evaluation == first, "evaluated off-pace"
    h.clock.advance(0.5)
    h.engine.tick()
    assert h.rollout(rollout_id).state == "aborted"


def test_the_shadow_stage_is_judged_when_shadow_s_ends_between_evaluations(h: Harness) -> None:
    rollout_id, pis, jetsons = _start(h, shadow_s=7)
    h.clock.advance(EVALUATE_EVERY_S)
    h.engine.tick()  # paced evaluation at +5 s: too early to pass
    _reports(h, pis + jetsons, paired=30)
    h.clock.advance(2)
    h.engine.tick()  # +7 s: shadow_s is over, 2 s after the last evaluation
    row = h.rollout(rollout_id)
    assert (row.state, row.stage) == ("running", 0), row.reason


def test_a_device_that_joins_mid_shadow_gets_the_shadow_and_is_judged(h: Harness) -> None:
    rollout_id, pis, jetsons = _start(h)
    _reports(h, pis, paired=20)
    _reports(h, jetsons, paired=30)
    # A device of a new class enrols and matches the selector while the shadow stage runs.
    late = h.add_devices(1, device_class="coral", prefix="late")
    with Session(h.db) as session:
        device = session.get(Device, late[0])
        assert device is not None
        device.desired_name, device.desired_version = h.model, OLD
        session.add(device)
        session.commit()
    h.clock.advance(EVALUATE_EVERY_S)
    h.engine.tick()
    assert _shadow_rows(h)[late[0]] == (NEW, 0.5)
    sent = [s for s in h.publisher.sent if s.device_id == late[0]]
    assert sent and sent[-1].shadow is not None and sent[-1].shadow.version == NEW
    assert sent[-1].model is not None and sent[-1].model.version == OLD  # serves the old one
    assert "devices_joined" in [a for a, _ in h.decisions(rollout_id)]
    # Its class is judged too: the stage waits for its reports past shadow_s, then passes.
    h.clock.advance(61)
    h.engine.tick()
    row = h.rollout(rollout_id)
    assert row.state == "shadowing" and row.last_evaluation is not None
    gates = {(g["name"], g["detail"]): g["status"] for g in row.last_evaluation["gates"]}
    assert gates[("shadow_agreement", "class coral")] == "wait"
    _reports(h, late, paired=60)
    h.clock.advance(EVALUATE_EVERY_S)
    h.engine.tick()
    assert h.rollout(rollout_id).state == "running", h.rollout(rollout_id).reason
    assert _shadow_rows(h) == {}  # taken off every member, the late one too


def test_the_shadow_stage_times_out_into_an_abort(h: Harness) -> None:
    pis, _ = _fleet(h)
    rollout = h.create(strategy={"shadow": SHADOW, "stage_timeout_s": 300})
    h.clock.advance(301)
    h.engine.tick()
    row = h.rollout(rollout.id)
    assert row.state == "aborted" and "timed out" in (row.reason or "")
    assert _shadow_rows(h) == {} and h.desired(pis[0]) == OLD


def test_an_operator_abort_in_shadow_takes_the_shadows_off(h: Harness) -> None:
    rollout_id, pis, jetsons = _start(h)
    with pytest.raises(TransitionRefused):
        service.pause(h.engine, rollout_id, actor="op", reason="")
    service.abort(h.engine, rollout_id, actor="op", reason="changed my mind")
    assert h.rollout(rollout_id).state == "aborted"
    assert _shadow_rows(h) == {} and _desired_versions(h, pis + jetsons) == {OLD}


@pytest.mark.parametrize(
    "shadow",
    [
        {"shadow_s": 0},
        {"shadow_s": -1},
        {"shadow_s": 1e12},
        {"shadow_s": 60, "min_agreement": 1.5},
        {"shadow_s": 60, "max_latency_ratio": 0},
        {"shadow_s": 60, "sample_rate": 0},
        {"shadow_s": 60, "min_samples": 0},
        {"shadow_s": 60, "evil": True},
        {"sample_rate": 0.5},
        {"shadow_s": "NaN"},
        "60",
    ],
)
def test_a_malformed_shadow_block_is_refused(shadow: Any) -> None:
    body = {
        "model": "digits",
        "version": NEW,
        "selector": {"tags": ["x"]},
        "strategy": {"shadow": shadow},
    }
    with pytest.raises(ValidationError) as refused:
        RolloutCreate.model_validate(body)
    assert "shadow" in str(refused.value)
