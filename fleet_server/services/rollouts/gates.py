"""Rollout gates: one small class per question, behind a Protocol, found by name in ``GATES``.

A gate answers ``pass``, ``fail`` (the candidate is worse than the baseline by more than the
threshold, *significantly*: the whole one-sided confidence interval at the policy's ``alpha`` lies
beyond it), ``wait`` (too little evidence, or an estimate beyond the threshold that is not
significant yet: the stage waits, and the detail says what it needs), ``skipped`` (the question
does not apply, e.g. no confidence histogram from a regression model, or no old-version baseline
at all) or ``disabled``. Before a stage's soak ends the engine asks with ``early_alpha`` (a much
smaller false-alarm rate): a stage fails early only when a gate is clearly out of reach. Every
result carries its value, interval, threshold and sample count: they go into the rollout report
as is. Here the gates that count (success, offline) and the registry; the gates that compare the
new version with the baseline are in :mod:`.comparisons`, their statistics in :mod:`.stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import replace
from typing import Any

from fleet_server.services.rollouts.comparisons import (
    ConfidenceShift,
    ErrorRate,
    LabelAccuracy,
)
from fleet_server.services.rollouts.evidence import Evidence
from fleet_server.services.rollouts.gate_result import Gate, GateBase, GateResult, GateStatus
from fleet_server.services.rollouts.latency import LatencyRatio
from fleet_server.services.rollouts.spec import GatePolicy, OfflineGate, SuccessRateGate


class SuccessRate(GateBase):
    """Committed / finished updates of the stage: counts, not an estimate. Fails early once the
    threshold is out of reach even if every unfinished update commits."""

    name = "success_rate"

    def __init__(self, config: SuccessRateGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence, *, alpha: float) -> GateResult:
        c = self.config
        finished = evidence.committed + evidence.failed
        rate = evidence.committed / finished if finished else None
        best_case = evidence.committed + evidence.unfinished
        if evidence.stage_devices and best_case < c.min_rate * evidence.stage_devices:
            detail = f"{evidence.failed} of {evidence.stage_devices} updates failed"
            return self._result("fail", rate, c.min_rate, finished, c.min_samples, detail)
        if finished < c.min_samples or evidence.unfinished:
            detail = f"needs every update finished: {evidence.unfinished} still running"
            return self._result("wait", rate, c.min_rate, finished, c.min_samples, detail)
        status: GateStatus = "pass" if rate is not None and rate >= c.min_rate else "fail"
        return self._result(status, rate, c.min_rate, finished, c.min_samples)


class Offline(GateBase):
    """Share of committed devices offline for ``grace_s`` or longer (a count, not an estimate)."""

    name = "offline"

    def __init__(self, config: OfflineGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence, *, alpha: float) -> GateResult:
        c = self.config
        n = evidence.committed_total
        if n < c.min_samples:
            return self._needs("committed devices", n, c.min_samples, c.max_fraction)
        fraction = evidence.committed_offline / n
        status: GateStatus = "pass" if fraction <= c.max_fraction else "fail"
        detail = f"{evidence.committed_offline} of {n} offline for ≥ {c.grace_s:g} s"
        return self._result(status, fraction, c.max_fraction, n, c.min_samples, detail)


#: The gates device statuses alone decide (no telemetry read): judged on every tick, the others
#: when an evaluation is due.
STATUS_GATES = frozenset({"success_rate", "offline"})

#: Gate name → constructor from the policy; the order is the report's order.
GATES: dict[str, Callable[[Any], Gate]] = {
    "success_rate": SuccessRate,
    "error_rate": ErrorRate,
    "latency_p95_ratio": LatencyRatio,
    "confidence_shift": ConfidenceShift,
    "offline": Offline,
    "label_accuracy": LabelAccuracy,
}


#: What a gate's verdict rests on when the gate does not say (see ``GateResult.evidence``):
#: counts of device statuses, labels, or else the stage's telemetry baseline.
EVIDENCE_OF = {"success_rate": "counts", "offline": "counts", "label_accuracy": "labels"}


def evaluate_all(
    policy: GatePolicy, evidence: Evidence, *, soaked: bool, only: Set[str] | None = None
) -> list[GateResult]:
    """Every enabled gate (or those in ``only``), at ``policy.alpha`` once the stage has soaked
    and at the much smaller ``policy.early_alpha`` before: early, only what is clearly out of
    reach fails."""
    alpha = policy.alpha if soaked else policy.early_alpha
    results = []
    for name, gate_type in GATES.items():
        if only is not None and name not in only:
            continue
        config = getattr(policy, name)
        if not config.enabled:
            results.append(GateResult(name, "disabled", None, 0.0, 0, 0, evidence="none"))
            continue
        gate: Gate = gate_type(config)
        result = gate.evaluate(evidence, alpha=alpha)
        if not result.evidence:  # a gate that did not say: the stage's telemetry baseline
            result = replace(result, evidence=EVIDENCE_OF.get(name, evidence.baseline))
        results.append(result)
    return results


__all__ = ["GATES", "STATUS_GATES", "Gate", "GateResult", "GateStatus", "evaluate_all"]
