"""Stopping hopeless candidates early (issue #12): validation stops once even perfect remaining
rows could not bring a candidate within budget (an exact bound, checked against the full
score), the budget loop stops when its pace cannot reach the budget unless the next tensor is
ruinous, and the ranking sees int8 weight error. Real quantizer runs on models the tests
build; assertions on decisions and the report's reasons, never on wall-clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.api import convert
from converters.options import ConvertOptions
from converters.quantize import metrics
from converters.quantize.early_stop import (
    RUINOUS_ERROR,
    best_case,
    chunk_rows,
    far_beyond,
    loop_out_of_reach,
    timing_settled,
)
from converters.quantize.engines import INT8_OPS
from converters.quantize.gate import benchmark, gate, interval_rank, median_interval
from converters.quantize.ranking import rank_tensors, weight_error
from converters.quantize.task_metrics import TaskDecode
from edgefleet.contract.postprocess import MaskPost, YoloV8Post
from tests.converters.factories import (
    save_onnx,
    weight_outlier_onnx,
    weight_outlier_rows,
    write_npz,
)

QUICK: dict[str, Any] = {
    "latency_warmup": 3,
    "latency_runs": 20,
    "gate_rounds": 6,
    "gate_runs_per_round": 10,
    "calibration_methods": ["minmax"],
    # The rules under test act on accuracy: validate even candidates the latency probe would
    # drop (int8 of a 16-wide MLP is not faster than fp32).
    "latency_probe": False,
}
ROWS = 40


def _scores(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    fp32 = rng.standard_normal((ROWS, 5)).astype(np.float32)
    got = fp32.copy()
    flip = rng.random(ROWS) < 0.3
    got[flip] = rng.standard_normal((int(flip.sum()), 5)).astype(np.float32)
    return {"s": got}, {"s": fp32}


def _boxes(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    pred = np.zeros((ROWS, 5, 30), np.float32)
    pred[:, 0:2] = rng.uniform(8, 56, (ROWS, 2, 30))
    pred[:, 2:4] = rng.uniform(4, 12, (ROWS, 2, 30))
    pred[:, 4] = rng.uniform(0, 1, (ROWS, 30))
    moved = pred.copy()
    moved[:, 0:2] += rng.normal(0, 3, (ROWS, 2, 30)) * (rng.random((ROWS, 1, 1)) < 0.5)
    moved[:, 4] *= rng.uniform(0.6, 1.4, (ROWS, 30))
    return {"pred": moved}, {"pred": pred}


def _masks(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    logits = rng.standard_normal((ROWS, 3, 8, 8)).astype(np.float32)
    noisy = logits + rng.normal(0, 0.6, logits.shape).astype(np.float32)
    return {"m": noisy}, {"m": logits}


@pytest.mark.parametrize(
    ("name", "make", "decode"),
    [
        ("argmax_agreement", _scores, None),
        ("top1", _scores, None),
        ("box_f1", _boxes, TaskDecode(YoloV8Post(output="pred"), (64, 64))),
        ("mask_iou", _masks, TaskDecode(MaskPost(output="m", channels_last=False), (8, 8))),
    ],
)
def test_best_case_never_undercuts_the_full_score(name: str, make: Any, decode: Any) -> None:
    """For every prefix, the bound is at least the score on all rows (so stopping on it never
    rejects a candidate that would have been within budget), and on all rows it is the score."""
    rng = np.random.default_rng(7)
    for trial in range(3):
        got, fp32 = make(rng)
        labels = fp32["s"].argmax(1) if name == "top1" else None
        if labels is not None and trial:
            labels = rng.integers(0, 5, ROWS)  # labels fp32 gets partly wrong too
        full = metrics.score(name, got, fp32, labels=labels, class_values=None, decode=decode)
        assert full < 1.0  # the candidate does differ: the bound has something to bound
        bounds = []
        for done in range(1, ROWS + 1):
            prefix = {k: v[:done] for k, v in got.items()}
            bound = best_case(name, prefix, fp32, labels=labels, class_values=None, decode=decode)
            assert bound is not None and bound >= full - 1e-12, (done, bound, full)
            bounds.append(bound)
        assert bounds[-1] == pytest.approx(full)
        assert bounds[0] > bounds[-1]  # it tightens as rows come in


def test_best_case_has_no_bound_for_cosine() -> None:
    got, fp32 = _scores(np.random.default_rng(0))
    assert best_case("cosine", got, fp32, labels=None, class_values=None, decode=None) is None


def test_chunks_are_whole_batches() -> None:
    assert chunk_rows(64, None) == 8
    assert chunk_rows(32, 1) == 4
    assert chunk_rows(30, 4) == 4  # a multiple of the fixed batch
    assert chunk_rows(3, None) == 1
    assert chunk_rows(5, 8) == 5  # never more than there is


def test_loop_rule_decisions() -> None:
    # No step yet: the first always runs, however far the drop.
    assert loop_out_of_reach(0.9, [], steps_left=6, budget=0.01, next_error=0.01) is None
    # A step that did nothing, a tame next tensor: stop, and say why with the numbers.
    why = loop_out_of_reach(0.96, [0.96], steps_left=5, budget=0.01, next_error=0.05)
    assert why is not None and "stopped after 1 step" in why and "0.9600 → 0.9600" in why
    # ... unless the next tensor is ruined by int8 on its own: it may be the one that mends it.
    assert loop_out_of_reach(0.96, [0.96], steps_left=5, budget=0.01, next_error=0.9) is None
    assert (
        loop_out_of_reach(0.9, [0.9], steps_left=5, budget=0.01, next_error=RUINOUS_ERROR) is None
    )
    # A pace that reaches the budget within the steps left goes on; one that does not stops.
    assert loop_out_of_reach(0.05, [0.04], steps_left=5, budget=0.01, next_error=0.01) is None
    slow = loop_out_of_reach(0.42, [0.40, 0.39], steps_left=4, budget=0.01, next_error=0.01)
    assert slow is not None and "0.0150 a step" in slow
    # Within budget: nothing to stop.
    assert loop_out_of_reach(0.5, [0.005], steps_left=3, budget=0.01, next_error=0.01) is None


def test_weight_error_sees_an_outlier_weight_per_tensor_not_per_channel() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32))
    assert weight_error(w, axis=-1, per_channel=False) < 0.02
    w[0, 0] = 1e4
    assert weight_error(w, axis=-1, per_channel=False) > RUINOUS_ERROR
    assert weight_error(w, axis=-1, per_channel=True) < 0.05


def test_ranking_puts_a_weight_outlier_first_for_per_tensor_candidates() -> None:
    model = weight_outlier_onnx()
    feeds = {"x": weight_outlier_rows(64)}
    activations_only = rank_tensors(model, feeds, op_types=INT8_OPS, per_channel=True)
    per_tensor = rank_tensors(model, feeds, op_types=INT8_OPS, per_channel=False)
    assert activations_only[0].tensor == "h3"  # the scaled channel: benign-looking activations
    assert per_tensor[0].tensor == "m1" and {"fc1", "relu1"} <= set(per_tensor[0].nodes)
    assert per_tensor[0].error > RUINOUS_ERROR


@pytest.fixture(scope="module")
def weight_outlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("weight-outlier")
    source = save_onnx(weight_outlier_onnx(), work / "model.onnx")
    return source, write_npz(work / "calib.npz", x=weight_outlier_rows(128))


def test_hopeless_candidates_are_decided_on_a_few_rows(
    weight_outlier: tuple[Path, Path], tmp_path: Path
) -> None:
    """Per-tensor int8 zeroes W1: the drop is far beyond the budget, and with no budget loop
    the candidate is rejected after the first chunks of rows, saying so."""
    source, calib = weight_outlier
    options = ConvertOptions(**QUICK, calibration=calib, max_exclusion_steps=0)
    report = convert(source, tmp_path / "out", options).report.quantization
    assert report is not None and report.metric == "argmax_agreement"
    per_tensor = [c for c in report.candidates if c.name.startswith("int8") and "-pt-" in c.name]
    assert per_tensor
    for c in per_tensor:
        assert c.status == "rejected", c
        assert c.eval_rows is not None and c.eval_rows < report.eval_rows, c
        assert c.drop is not None and c.drop > report.max_drop
        assert f"decided on {c.eval_rows} of {report.eval_rows} eval rows" in c.reason
        assert c.reason.startswith("argmax_agreement drop ≥ ")
    # Candidates within budget are always measured on every row.
    for c in report.candidates:
        if c.drop is not None and c.drop <= report.max_drop:
            assert c.eval_rows is None, c


def test_budget_loop_spares_the_weight_culprit_first_and_stops_when_stalled(
    weight_outlier: tuple[Path, Path], tmp_path: Path
) -> None:
    source, calib = weight_outlier
    options = ConvertOptions(**QUICK, calibration=calib, max_exclusion_steps=4)
    report = convert(source, tmp_path / "out", options).report.quantization
    assert report is not None
    looped = [c for c in report.candidates if c.budget_steps]
    assert looped
    for c in looped:
        steps = c.budget_steps
        assert all(s.eval_rows is None for s in steps)  # the loop compares exact drops
        if "-pt-" in c.name:  # W1's per-tensor scale is the culprit: spared at once
            assert steps[0].excluded_tensor == "m1" and steps[0].tensor_error > RUINOUS_ERROR
        if "budget loop stopped" in c.reason:
            # The rule, recomputed from the report's own numbers, says stop.
            drops = [s.drop for s in steps if s.drop is not None]
            assert len(steps) < options.max_exclusion_steps
            assert c.drop is not None and c.drop > report.max_drop and c.status == "rejected"
            start = float(c.reason.split("drop ")[-1].split(" → ")[0])
            why = loop_out_of_reach(
                start,
                drops,
                steps_left=options.max_exclusion_steps - len(steps),
                budget=report.max_drop,
                next_error=0.0,
            )
            assert why is not None
    # With the weight culprit first, the per-tensor candidates are mended within budget.
    mended = [c for c in looped if "-pt-" in c.name]
    assert mended and all(c.drop is not None and c.drop <= report.max_drop for c in mended)
    # Some per-channel candidate stalled on this model (sparing h3 does nothing) and stopped.
    assert any("budget loop stopped" in c.reason for c in looped)


def test_far_beyond_rule() -> None:
    assert far_beyond(0.049, 0.01) is None
    why = far_beyond(0.05, 0.01)
    assert why is not None and "other range estimators not tried" in why and "5x" in why
    assert far_beyond(0.5, 0.0) is None  # a zero budget: every drop is "far"; not a reason


def test_a_candidate_far_beyond_the_budget_skips_the_other_estimators(
    weight_outlier: tuple[Path, Path], tmp_path: Path
) -> None:
    """Per-tensor int8 zeroes W1 (drop ~0.6, far over 5x the budget): entropy and percentile
    are not tried for those candidates, the report says why, and the budget loop still mends
    them. Per-channel candidates (drop ~0.05-0.1 here) decide by their own numbers."""
    source, calib = weight_outlier
    options = ConvertOptions(
        **{**QUICK, "calibration_methods": ["minmax", "entropy", "percentile"]},
        calibration=calib,
        max_exclusion_steps=4,
    )
    report = convert(source, tmp_path / "out", options).report.quantization
    assert report is not None
    names = [c.name for c in report.candidates]
    per_tensor = [c for c in report.candidates if "-pt-" in c.name and c.name.startswith("int8")]
    assert per_tensor
    for c in per_tensor:
        # The note stays in the reason unless the latency gate then rejected it (gate's words).
        gated = c.reason.startswith("latency gate:")
        assert gated or "other range estimators not tried" in c.reason, c.reason
        assert c.drop is not None and c.drop <= report.max_drop  # the loop mended it
        stem = c.name.split("-minmax")[0]
        assert f"{stem}-entropy" not in names and f"{stem}-percentile" not in names
    for c in report.candidates:
        if "other range estimators not tried" in c.reason:
            assert "-minmax" in c.name


# -- rule 4: latency timing stops once a rejection is settled ---------------------------------


def test_timing_settled_needs_rank_rounds_at_or_below_one() -> None:
    assert timing_settled([0.9, 1.2, 0.95], rank=4) is None
    why = timing_settled([0.9, 1.2, 0.95, 1.0, 0.8], rank=4)
    assert why is not None and "4 of its first 5 paired rounds" in why and "4th smallest" in why
    assert timing_settled([0.5] * 10, rank=None) is None  # no interval: never settled early
    assert interval_rank(15) == 4 and interval_rank(5) is None
    # The rank is the interval's low end: 4 slow rounds of 15 put it at or below 1x.
    rounds = [0.9, 0.95, 1.0, 0.99] + [2.0] * 11
    interval = median_interval(rounds)
    assert interval is not None and interval[0] <= 1.0


class _Clock:
    """perf_counter_ns for the benchmark: a session's call advances it by its own ms."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


class _Timed:
    def __init__(self, clock: _Clock, ms: float, calls: list[str], name: str) -> None:
        self.clock, self.ms, self.calls, self.name = clock, ms, calls, name

    def run(self, _outputs: object, _feed: object) -> None:
        self.calls.append(self.name)
        self.clock.ns += int(self.ms * 1e6)


def test_benchmark_stops_timing_a_settled_candidate_and_the_gate_rejects_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from converters.quantize import gate as gate_module

    clock = _Clock()
    monkeypatch.setattr(gate_module.time, "perf_counter_ns", clock)
    calls: list[str] = []
    sessions = {
        name: _Timed(clock, ms, calls, name)
        for name, ms in (("fp32", 10.0), ("slow", 12.0), ("fast", 5.0))
    }
    timings = benchmark(
        sessions,
        {"x": 1},
        warmup=1,
        rounds=15,
        runs_per_round=2,
        baseline="fp32",
        settle_rank=interval_rank(15),
    )
    assert timings["fp32"].runs == 30 and timings["fast"].runs == 30
    assert timings["slow"].runs == 8 and len(timings["slow"].round_ms) == 4
    assert timings["fast"].settled is None and timings["slow"].settled is not None
    verdict = gate(timings["fp32"], timings["slow"])
    assert not verdict.accepted and "timing stopped" in verdict.reason
    assert gate(timings["fp32"], timings["fast"]).accepted
    # Settled only at the last round: nothing was stopped, the ordinary verdict stands.
    late = benchmark(
        {"fp32": sessions["fp32"], "slow": sessions["slow"]},
        {"x": 1},
        warmup=1,
        rounds=4,
        runs_per_round=1,
        baseline="fp32",
        settle_rank=4,
    )
    assert late["slow"].settled is None and late["slow"].runs == 4
    # Without a rank every session runs every round (the default).
    full = benchmark(sessions, {"x": 1}, warmup=1, rounds=15, runs_per_round=2)
    assert all(t.runs == 30 and t.settled is None for t in full.values())
