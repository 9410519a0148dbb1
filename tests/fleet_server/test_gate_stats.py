"""Rollout gates decide on evidence (issue #14): the statistics against references, each gate on
synthetic evidence (identical distributions never fail at small n, a 1.5x slower version fails
with enough n, a more confident version passes, too little evidence waits and says what it
needs, hostile numbers are ignored), the policy's validation, the CLI flags, and a small run of
the heterogeneous-fleet simulation (``bench/gate_bench.py`` runs the big one)."""

from __future__ import annotations

import argparse
import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from fleet_server.client.rollouts import _spec
from fleet_server.client.rollouts_cli import register
from fleet_server.services.quality.service import LabelCounts
from fleet_server.services.rollouts.comparisons import (
    ConfidenceShift,
    ErrorRate,
    LabelAccuracy,
)
from fleet_server.services.rollouts.evidence import Cohort, Evidence
from fleet_server.services.rollouts.gates import evaluate_all
from fleet_server.services.rollouts.latency import LatencyRatio
from fleet_server.services.rollouts.spec import (
    ConfidenceGate,
    ErrorRateGate,
    GatePolicy,
    LabelAccuracyGate,
    LatencyGate,
)
from fleet_server.services.rollouts.stats import (
    Interval,
    fixed_mean,
    judge,
    proportion_difference,
    stratified_difference,
    t_quantile,
    t_sf,
)
from hil.gate_sim import Candidate, rollout

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALPHA = 0.01


# -- the statistics ----------------------------------------------------------------------------
def test_fixed_mean_averages_devices_and_takes_the_spread_within_them() -> None:
    # One device: a one-sample t interval on its own values.
    one = fixed_mean([[1.0, 2.0, 3.0]])
    assert one is not None
    assert (one.estimate, one.se, one.df) == pytest.approx((2.0, math.sqrt(1 / 3), 2.0))
    # Devices weigh alike whatever their counts; a one-value device (no spread) is left out.
    two = fixed_mean([[0.0, 2.0], [10.0, 10.0, 10.0, 10.0], [99.0]])
    assert two is not None and two.estimate == pytest.approx(5.5)
    assert two.se == pytest.approx(math.sqrt(2 / 2 / 4))
    assert fixed_mean([[1.0], []]) is None  # the spread is unknown: the gate waits


def test_t_quantiles_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 3.5, 30):
        for alpha in (0.1, 0.001, 0.0001):
            assert t_quantile(alpha, df) == pytest.approx(stats.t.isf(alpha, df), rel=1e-6)
            assert t_sf(-1.3, df) == pytest.approx(stats.t.sf(-1.3, df), rel=1e-6)


def test_newcombe_hybrid_score_interval_matches_the_paper() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 - 48/80, method 10.
    interval = proportion_difference(56, 70, 48, 80, alpha=0.025)
    assert interval.estimate == pytest.approx(0.2)
    assert interval.low == pytest.approx(0.0524, abs=5e-4)
    assert interval.high == pytest.approx(0.3339, abs=5e-4)


def test_the_stratified_difference_is_newcombe_on_one_device_and_not_fooled_by_13_of_13() -> None:
    one = stratified_difference([(56, 70, 48, 80)], alpha=0.025)
    newcombe = proportion_difference(56, 70, 48, 80, alpha=0.025)
    assert (one.low, one.high) == pytest.approx((newcombe.low, newcombe.high))
    # A device that got 13 of 13 right before (by luck) and 35 of 51 after: not significant.
    lucky = stratified_difference([(35, 51, 13, 13)], alpha=0.001)
    assert lucky.estimate < -0.3 and lucky.high > -0.02


def test_judge_fails_only_when_the_whole_interval_is_beyond() -> None:
    for patient in (True, False):
        assert judge(Interval(1.6, 1.3, 1.9), 1.25, alpha=ALPHA, patient=patient)[0] == "fail"
        unknown = Interval(1.6, -math.inf, math.inf)
        assert judge(unknown, 1.25, alpha=ALPHA, patient=patient)[0] == "wait"
        within = Interval(1.0, -math.inf, math.inf)
        assert judge(within, 1.25, alpha=ALPHA, patient=patient)[0] == "pass"
    status, why = judge(Interval(1.6, 1.1, 2.3), 1.25, alpha=ALPHA, patient=True)
    assert status == "wait" and "needs more" in why
    status, why = judge(Interval(1.6, 1.1, 2.3), 1.25, alpha=ALPHA, patient=False)
    assert status == "pass" and "not significant" in why


# -- synthetic evidence --------------------------------------------------------------------------
class Row:
    def __init__(self, device_id: str, p95: float, hist: list[int] | None = None) -> None:
        self.device_id = device_id
        self.received_at = T0
        self.model = {"name": "m", "version": "1"}
        self.inference_count = sum(hist) if hist else 100
        self.error_count = 0
        self.latency_ms = {"p50": p95 / 2, "p95": p95}
        self.confidence_histogram = hist or []


def _evidence(new: Cohort, old: Cohort, baseline: Any = "pre-update") -> Evidence:
    return Evidence(
        stage_devices=1,
        committed=1,
        failed=0,
        unfinished=0,
        committed_total=1,
        committed_offline=0,
        new=new,
        old=old,
        baseline=baseline,
    )


def _latency(rng: random.Random, devices: int, n: int, factor: float) -> Evidence:
    """Each device its own speed (heterogeneous), ``n`` noisy p95s before and after."""
    new, old = Cohort(), Cohort()
    for d in range(devices):
        speed = 10.0 * math.exp(rng.gauss(0, 0.4))
        for _ in range(n):
            old.add(Row(f"d{d}", speed * math.exp(rng.gauss(0, 0.15))), "rpi4")
            new.add(Row(f"d{d}", factor * speed * math.exp(rng.gauss(0, 0.15))), "rpi4")
    return _evidence(new, old)


def test_identical_latency_never_fails_at_small_n() -> None:
    gate = LatencyRatio(LatencyGate(min_samples=3))
    rng = random.Random(1)
    statuses = [
        gate.evaluate(_latency(rng, devices, n, 1.0), alpha=ALPHA).status
        for devices in (1, 2)
        for n in (3, 4, 6, 8)
        for _ in range(50)
    ]
    assert "fail" not in statuses
    assert statuses.count("pass") > 0.95 * len(statuses)


def test_a_1_5x_slower_version_fails_with_enough_evidence() -> None:
    gate = LatencyRatio(LatencyGate(min_samples=3))
    result = gate.evaluate(_latency(random.Random(2), 2, 12, 1.5), alpha=ALPHA)
    assert result.status == "fail", result
    assert result.low is not None and result.low > 1.25
    assert result.value == pytest.approx(1.5, rel=0.15)


def test_control_devices_with_other_speeds_are_units_not_samples() -> None:
    # One canary and one control device that is simply faster: no spread to judge with, so the
    # gate cannot call it significant; it waits and says it needs more devices.
    new, old = Cohort(), Cohort()
    for i in range(20):
        new.add(Row("canary", 15.0 + i % 3), "rpi4")
        old.add(Row("control", 10.0 + i % 3), "rpi4")
    result = LatencyRatio(LatencyGate()).evaluate(_evidence(new, old, "control"), alpha=ALPHA)
    assert result.status == "wait" and "cannot estimate the spread" in result.detail


def test_too_little_latency_evidence_waits_and_says_what_it_needs() -> None:
    new, old = Cohort(), Cohort()
    new.add(Row("d", 30.0), "rpi4")
    old.add(Row("d", 10.0), "rpi4")
    result = LatencyRatio(LatencyGate(min_samples=3)).evaluate(_evidence(new, old), alpha=ALPHA)
    assert result.status == "wait" and "needs 3" in result.detail and "has 1" in result.detail


def test_a_missing_baseline_of_a_replaced_version_waits_instead_of_passing() -> None:
    # A canary judged before its old-version telemetry is ingested (a busy server): with the
    # old version known to have run, "nothing to compare with" is not a pass (a 3x slower
    # version once passed the canary that way); with no old version at all, the gate is skipped.
    new = Cohort()
    for i in range(6):
        new.add(Row("d", 30.0 + i, [0, 0, 5, 5]), "rpi4")
    thin = _evidence(new, Cohort(), "none")
    latency = LatencyRatio(LatencyGate(min_samples=2))
    confidence = ConfidenceShift(ConfidenceGate(min_samples=5))
    assert latency.evaluate(thin, alpha=ALPHA).status == "skipped"
    assert confidence.evaluate(thin, alpha=ALPHA).status == "skipped"
    thin.replaced = True
    waiting = latency.evaluate(thin, alpha=ALPHA)
    assert waiting.status == "wait" and "replaced version" in waiting.detail, waiting
    assert confidence.evaluate(thin, alpha=ALPHA).status == "wait"
    # Another device class's baseline is no baseline for this one either.
    other = Cohort()
    for i in range(6):
        other.add(Row("c", 10.0 + i), "rpi5")
    assert latency.evaluate(_evidence(new, other, "control"), alpha=ALPHA).status == "skipped"
    mismatched = _evidence(new, other, "control")
    mismatched.replaced = True
    assert latency.evaluate(mismatched, alpha=ALPHA).status == "wait"


def test_hostile_latencies_are_ignored_not_raised() -> None:
    new, old = Cohort(), Cohort()
    for value in (0.0, -5.0, float("nan"), float("inf"), 10.0, 10.5, 11.0):
        new.add(Row("d", value), "rpi4")
        old.add(Row("d", value), "rpi4")
    result = LatencyRatio(LatencyGate(min_samples=3)).evaluate(_evidence(new, old), alpha=ALPHA)
    assert result.status == "pass" and result.value == pytest.approx(1.0)


def _histograms(new_hist: list[int], old_hist: list[int], intervals: int = 3) -> Evidence:
    new, old = Cohort(), Cohort()
    for _ in range(intervals):
        new.add(Row("d", 10.0, new_hist), "rpi4")
        old.add(Row("d", 10.0, old_hist), "rpi4")
    return _evidence(new, old)


def test_a_more_confident_version_passes_the_confidence_gate() -> None:
    old = [0, 0, 5, 5, 10, 10, 10, 20, 20, 20]
    more = [0, 0, 0, 0, 0, 0, 5, 15, 30, 50]
    gate = ConfidenceShift(ConfidenceGate(min_samples=50))
    assert gate.evaluate(_histograms(more, old), alpha=ALPHA).status == "pass"
    both = ConfidenceShift(ConfidenceGate(min_samples=50, direction="both"))
    assert both.evaluate(_histograms(more, old), alpha=ALPHA).status == "fail"
    less = gate.evaluate(_histograms(list(reversed(more)), old), alpha=ALPHA)
    assert less.status == "fail" and less.value is not None and less.value > 0.5


def test_identical_histograms_at_small_n_never_fail() -> None:
    rng = random.Random(3)
    probabilities = [0.02, 0.03, 0.05, 0.05, 0.1, 0.1, 0.15, 0.2, 0.2, 0.1]
    gate = ConfidenceShift(ConfidenceGate(min_samples=20))
    for _ in range(200):
        draws = [rng.choices(range(10), probabilities, k=30) for _ in range(2)]
        new, old = ([d.count(k) for k in range(10)] for d in draws)
        assert gate.evaluate(_histograms(new, old, 1), alpha=ALPHA).status != "fail"


def test_error_rate_at_small_counts_is_not_significant() -> None:
    gate = ErrorRate(ErrorRateGate(min_samples=50))
    new, old = Cohort(), Cohort()
    old.inferences, old.errors = 600, 3
    new.inferences, new.errors = 60, 2  # 3.3 % on 60 inferences: beyond, not significant
    result = gate.evaluate(_evidence(new, old), alpha=0.001)
    assert result.status == "wait" and "needs more" in result.detail
    new.inferences, new.errors = 400, 8  # 2 % on 4 x min_samples: still not significant
    result = gate.evaluate(_evidence(new, old), alpha=0.001)
    assert result.status == "pass" and "not significant" in result.detail
    new.inferences, new.errors = 6000, 200  # 3.3 % vs 0.5 % on 6000 each: significant
    old.inferences, old.errors = 6000, 30
    assert gate.evaluate(_evidence(new, old), alpha=0.001).status == "fail"


def test_labels_compare_each_device_with_itself() -> None:
    new, old = Cohort(), Cohort()
    # The canary sees hard images (60 % right on both versions); the rest of the fleet 95 %.
    new.labels_by_device = {"canary": LabelCounts(100, 60)}
    old.labels_by_device = {"canary": LabelCounts(100, 61), "other": LabelCounts(900, 855)}
    new.labels, old.labels = LabelCounts(100, 60), LabelCounts(1000, 916)
    gate = LabelAccuracy(LabelAccuracyGate(min_samples=50))
    result = gate.evaluate(_evidence(new, old), alpha=ALPHA)
    assert result.status == "pass" and result.value == pytest.approx(-0.01)
    new.labels_by_device = {"canary": LabelCounts(100, 30)}
    assert gate.evaluate(_evidence(new, old), alpha=ALPHA).status == "fail"


def test_before_the_soak_only_what_is_clearly_out_of_reach_fails() -> None:
    new, old = Cohort(), Cohort()
    new.inferences, new.errors = 300, 12  # 4 % vs 0.5 %: fails at 0.001, not at 0.0001
    old.inferences, old.errors = 2000, 10
    policy = GatePolicy()
    evidence = _evidence(new, old)
    early = {r.name: r for r in evaluate_all(policy, evidence, soaked=False)}
    late = {r.name: r for r in evaluate_all(policy, evidence, soaked=True)}
    assert early["error_rate"].status == "pass" and early["error_rate"].alpha == 0.0001
    assert late["error_rate"].status == "fail" and late["error_rate"].alpha == 0.001


def test_the_policy_refuses_nonsense_alphas() -> None:
    for bad in ({"alpha": 0}, {"alpha": 0.5}, {"early_alpha": 0.01}, {"settle_intervals": -1}):
        with pytest.raises(ValidationError):
            GatePolicy.model_validate(bad)


# -- the CLI -------------------------------------------------------------------------------------
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    common = argparse.ArgumentParser(add_help=False)
    register(parser.add_subparsers(dest="command"), common)
    return parser.parse_args(["rollouts", "create", "m", "1.0.0", "--tag", "t", *argv])


def test_every_threshold_is_a_flag() -> None:
    body = _spec(
        _parse(
            "--min-success-rate 0.9 --max-error-increase 0.02 --max-p95-ratio 1.3 "
            "--max-confidence-shift 0.3 --max-offline 0.2 --max-accuracy-drop 0.05 --alpha 0.05 "
            "--early-alpha 0.005 --settle-intervals 2 --confidence-direction both".split()
        )
    )
    gates = body["gates"]
    assert gates["success_rate"] == {"min_rate": 0.9}
    assert gates["error_rate"] == {"max_increase": 0.02}
    assert gates["latency_p95_ratio"] == {"max_ratio": 1.3}
    assert gates["confidence_shift"] == {"max_distance": 0.3, "direction": "both"}
    assert gates["offline"] == {"max_fraction": 0.2}
    assert gates["label_accuracy"] == {"max_drop": 0.05}
    assert (gates["alpha"], gates["early_alpha"], gates["settle_intervals"]) == (0.05, 0.005, 2)
    GatePolicy.model_validate(gates)  # what the flags build, the server accepts
    assert "gates" not in _spec(_parse([]))
    with pytest.raises(SystemExit):
        _parse(["--alpha", "often"])


def test_flags_over_a_spec_whose_gates_are_not_objects_fail_clearly(tmp_path: Any) -> None:
    from fleet_server.client.api import FleetClientError

    spec = tmp_path / "spec.json"
    spec.write_text('{"gates": {"latency_p95_ratio": 5}}')
    with pytest.raises(FleetClientError, match=r"gates\.latency_p95_ratio"):
        _spec(_parse(["--spec", str(spec), "--max-p95-ratio", "2"]))
    spec.write_text('{"gates": [1]}')
    with pytest.raises(FleetClientError, match="gates must be"):
        _spec(_parse(["--spec", str(spec), "--alpha", "0.05"]))


# -- the simulated heterogeneous fleet -----------------------------------------------------------
def test_identical_candidates_are_not_aborted_and_slow_ones_are() -> None:
    identical = [rollout(seed, size, Candidate()) for seed, size in enumerate((2, 2, 4, 4, 10, 2))]
    assert [o.result for o in identical] == ["completed"] * len(identical), identical
    slow = [rollout(100 + seed, size, Candidate(latency_factor=1.5)) for seed, size in
            enumerate((2, 4, 10))]  # fmt: skip
    assert all(o.result == "aborted" and "latency_p95_ratio" in o.failed for o in slow), slow
