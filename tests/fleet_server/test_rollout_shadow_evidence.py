"""Canary-stage gates on same-input shadow evidence (issue #14), on SQLite and PostgreSQL: the
rollout's devices report the candidate's shadow figures beside the version it replaces through
the real ingest path (``Telemetry.shadow``), and the latency and confidence gates prefer them to
the canary's own history and to control devices, which see other inputs."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlmodel import Session, col, select

from edgefleet.contract import ModelRef, ShadowReport, Telemetry
from fleet_server.models import Device
from fleet_server.models.rollouts import RolloutDevice
from fleet_server.services.rollouts import service
from fleet_server.services.rollouts.evaluation import EVALUATE_EVERY_S
from fleet_server.services.rollouts.shadow_pairs import pairs_of
from tests.fleet_server.rollout_harness import NEW, OLD, Harness

pytestmark = pytest.mark.integration

HIGH = [0, 0, 0, 0, 0, 0, 0, 10, 30, 60]  # what the control devices' inputs give
LOW = [60, 30, 10, 0, 0, 0, 0, 0, 0, 0]  # what the canary's inputs give (other images)


def _shadow_telemetry(
    h: Harness,
    ids: list[str],
    *,
    ratio: float,
    conf_delta: float,
    paired: int = 40,
    disagreements: int = 0,
    intervals: int = 3,
    shadow: str = NEW,
    serving: str = OLD,
) -> None:
    """Devices serving ``serving`` report an interval with ``shadow`` run beside it."""
    payloads: list[Any] = []
    for _ in range(intervals):
        for device_id in ids:
            report = ShadowReport(
                model=ModelRef(name=h.model, version=shadow),
                task="classification",
                paired=paired,
                disagreements=disagreements,
                agreement=(paired - disagreements) / paired,
                serving_p50_ms=5.0,
                serving_p95_ms=10.0,
                shadow_p50_ms=5.0 * ratio,
                shadow_p95_ms=10.0 * ratio,
                mean_abs_conf_delta=conf_delta,
            )
            payloads.append(
                Telemetry(
                    device_id=device_id,
                    seq=h._next(device_id),
                    ts=h.clock.now,
                    interval_s=10.0,
                    model=ModelRef(name=h.model, version=serving),
                    inference_count=100,
                    latency_ms={"p50": 5.0, "p95": 10.0},
                    confidence_histogram=HIGH,
                    shadow=report,
                )
            )
        h.clock.advance(1)
    h.send(payloads)


def _through_shadow(
    h: Harness, *, ratio: float, conf_delta: float, **shadow: Any
) -> tuple[int, str, list[str]]:
    """Ten devices serving the old version; a rollout whose shadow stage the control devices
    report on (the canary-to-be reports nothing: it has no pre-update history, so only the
    shadow reports and the control group can be its baseline); the shadow stage passes and the
    canary goes out. Returns the rollout, the canary and the control devices."""
    ids = h.add_devices(10)
    with Session(h.db) as session:
        for device in session.exec(select(Device).where(col(Device.device_id).in_(ids))):
            device.desired_name, device.desired_version = h.model, OLD
            session.add(device)
        session.commit()
    rollout = h.create(
        strategy={"shadow": {"shadow_s": 30, "min_samples": 50, **shadow}, "soak_s": 30}
    )
    members = h.members(rollout.id)
    canary, control = members[0], members[1:]
    _shadow_telemetry(h, control, ratio=ratio, conf_delta=conf_delta)
    h.clock.advance(31)
    h.engine.tick()
    assert h.rollout(rollout.id).state == "running", h.rollout(rollout.id).reason
    h.engine.tick()
    return rollout.id, canary, control


def _canary_serves(
    h: Harness, canary: str, control: list[str], *, p95: float, histogram: list[int]
) -> None:
    h.clock.advance(EVALUATE_EVERY_S)
    h.commit([canary])
    h.clock.advance(5)
    h.telemetry([canary], version=NEW, p95=p95, histogram=histogram, intervals=4)
    h.telemetry(control, version=OLD, p95=10.0, histogram=HIGH, intervals=2)


def _gates(evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in evaluation["gates"]}


def test_a_canary_seeing_other_inputs_passes_on_shadow_parity(h: Harness) -> None:
    rollout_id, canary, control = _through_shadow(h, ratio=1.0, conf_delta=0.01)
    assert h.members(rollout_id, "assigned") == [canary]
    # The canary's own inputs are darker and slower to process than the control devices':
    # against the control group the confidence collapses and p95 is 1.5x.
    _canary_serves(h, canary, control, p95=15.0, histogram=LOW)
    h.engine.tick()
    h.clock.advance(31)
    h.engine.tick()
    rollout = h.rollout(rollout_id)
    assert (rollout.state, rollout.stage) == ("running", 1), rollout.reason
    evaluation = h.decision(rollout_id, "stage_passed").evidence
    gates = _gates(evaluation)
    assert evaluation["evidence"]["baseline"] == "control"  # the canary has no history
    latency, confidence = gates["latency_p95_ratio"], gates["confidence_shift"]
    assert (latency["status"], latency["evidence"]) == ("pass", "shadow")
    assert latency["value"] == pytest.approx(1.0)
    assert latency["samples"] == 27  # 9 devices x 3 paired intervals
    assert (confidence["status"], confidence["evidence"]) == ("pass", "shadow")
    assert confidence["value"] == pytest.approx(0.01)
    assert confidence["samples"] == 27 * 40
    assert "agreement 1.000" in confidence["detail"]
    assert gates["error_rate"]["evidence"] == "control"
    assert gates["success_rate"]["evidence"] == "counts"
    shadow = evaluation["evidence"]["shadow"]
    assert shadow["devices"] == 9 and shadow["paired"] == 27 * 40
    assert shadow["latency_ratio_p95"] == pytest.approx(1.0)

    with Session(h.db) as session:
        report = service.report(session, rollout_id, now=h.clock.now)
    diff = report.differential
    assert diff["evidence_by_gate"]["latency_p95_ratio"] == "shadow"
    assert diff["evidence_by_gate"]["confidence_shift"] == "shadow"
    assert diff["same_input"]["agreement"] == pytest.approx(1.0)


def test_the_same_canary_without_shadow_evidence_fails_on_the_control_group(h: Harness) -> None:
    """The control: same fleet and telemetry, shadow reports of another version only."""
    ids = h.add_devices(10)
    rollout = h.create(strategy={"soak_s": 30})
    members = h.members(rollout.id)
    canary, control = members[0], members[1:]
    _shadow_telemetry(h, control, ratio=1.0, conf_delta=0.01, shadow=OLD, serving=OLD)
    _canary_serves(h, canary, control, p95=15.0, histogram=LOW)
    h.engine.tick()
    failed = h.decision(rollout.id, "gate_failed")
    confidence = _gates(failed.evidence)["confidence_shift"]
    assert (confidence["status"], confidence["evidence"]) == ("fail", "control")
    assert len(ids) == 10


def test_a_shadow_regression_fails_although_the_control_group_looks_alike(h: Harness) -> None:
    # The shadow stage's own latency bar is lax here; the canary's latency gate is not.
    rollout_id, canary, control = _through_shadow(
        h, ratio=2.0, conf_delta=0.01, max_latency_ratio=3.0
    )
    # The canary went out and was judged at once: the same-input evidence was already there
    # (2x slower on 27 intervals of 9 devices), so it is clearly out of reach even at the
    # early alpha, whatever the canary's own telemetry will say (here: like the control's).
    rollout = h.rollout(rollout_id)
    assert rollout.state in ("aborting", "aborted"), rollout.reason
    assert h.members(rollout_id, "reverted") == [canary]  # it still ran the old version
    assert len(h.members(rollout_id, "skipped")) == len(control)
    failed = h.decision(rollout_id, "gate_failed")
    assert failed.stage == 0
    latency = _gates(failed.evidence)["latency_p95_ratio"]
    assert (latency["status"], latency["evidence"]) == ("fail", "shadow")
    assert latency["value"] == pytest.approx(2.0)
    assert latency["low"] > 1.25  # significant and beyond the threshold
    assert "latency_p95_ratio" in failed.reason


def test_a_one_sided_gate_does_not_fail_on_an_unsigned_confidence_delta(h: Harness) -> None:
    """|Δconf| does not say which way confidence moved: beyond the threshold, a one-sided gate
    falls back to the telemetry baseline (here the canary is as confident as the control)."""
    rollout_id, canary, control = _through_shadow(h, ratio=1.0, conf_delta=0.6, min_agreement=0)
    _canary_serves(h, canary, control, p95=10.0, histogram=HIGH)
    h.engine.tick()
    h.clock.advance(31)
    h.engine.tick()
    assert h.rollout(rollout_id).stage == 1, h.rollout(rollout_id).reason
    confidence = _gates(h.decision(rollout_id, "stage_passed").evidence)["confidence_shift"]
    assert (confidence["status"], confidence["evidence"]) == ("pass", "control")
    assert "shadow |delta confidence| 0.6" in confidence["detail"]


def test_too_little_shadow_evidence_leaves_the_decision_to_the_baseline(h: Harness) -> None:
    rollout_id, canary, control = _through_shadow(h, ratio=1.0, conf_delta=0.01)
    h.clock.advance(EVALUATE_EVERY_S)
    h.engine.tick()
    evaluation = h.rollout(rollout_id).last_evaluation
    assert evaluation is not None
    gates = _gates(evaluation)
    # Shadow evidence of the right pair exists, but nothing on the new version yet: the
    # latency gate reads shadow evidence (27 intervals), the others wait for the canary.
    assert gates["latency_p95_ratio"]["evidence"] == "shadow"
    assert gates["error_rate"]["status"] == "wait"


def _member(device_id: str, previous: str | None, device_class: str = "rpi4") -> RolloutDevice:
    return RolloutDevice(
        rollout_id=1,
        device_id=device_id,
        position=0,
        device_class=device_class,
        previous_name="m" if previous else None,
        previous_version=previous,
    )


class _Row:
    def __init__(self, device_id: str, seq: int, **kw: Any) -> None:
        self.device_id, self.seq, self.ts = device_id, seq, seq
        self.model_name, self.model_version = kw.pop("model", ("m", "2"))
        self.paired = kw.pop("paired", 10)
        self.disagreements = kw.pop("disagreements", 0)
        self.figures = kw.pop(
            "figures",
            {
                "serving": {"name": "m", "version": "1"},
                "serving_p95_ms": 10.0,
                "shadow_p95_ms": 12.0,
                "mean_abs_conf_delta": 0.1,
            },
        )


@pytest.mark.parametrize(
    "figures",
    [
        None,
        {},
        {"serving": "m@1"},
        {"serving": {"name": "m", "version": "2"}, "serving_p95_ms": 10, "shadow_p95_ms": 1},
        {"serving": {"name": "m", "version": "3"}, "serving_p95_ms": 10, "shadow_p95_ms": 1},
    ],
)
def test_reports_that_do_not_compare_the_pair_are_left_out(figures: Any) -> None:
    pairs = pairs_of([_Row("a", 1, figures=figures)], [_member("a", "1")], ("m", "2"))
    assert pairs.intervals == 0 and pairs.summary()["latency_ratio_p95"] is None


@pytest.mark.parametrize(
    "hostile",
    [
        {"serving_p95_ms": 0, "shadow_p95_ms": 5},
        {"serving_p95_ms": -1, "shadow_p95_ms": 5},
        {"serving_p95_ms": "10", "shadow_p95_ms": True},
        {"serving_p95_ms": math.inf, "shadow_p95_ms": math.nan},
        {"mean_abs_conf_delta": 7.0, "errors": {"x": -3, "y": "many"}},
        {"mean_abs_conf_delta": -0.5, "errors": ["inference"]},
    ],
)
def test_malformed_figures_count_as_no_figure(hostile: dict[str, Any]) -> None:
    figures = {"serving": {"name": "m", "version": "1"}, **hostile}
    pairs = pairs_of(
        [_Row("a", 1, figures=figures), _Row("b", 1), _Row("c", 1, model=("m", "9"))],
        [_member("a", "1"), _member("b", "1"), _member("c", "1"), _member("d", None)],
        ("m", "2"),
    )
    assert set(pairs.log_ratio_by_device) == {"b"}  # a's figures are no ratio; c's is another
    assert set(pairs.conf_delta_by_device) == {"b"}
    assert pairs.intervals == 2 and pairs.errors == 0
    assert pairs.summary()["latency_ratio_p95"] == pytest.approx(1.2)
