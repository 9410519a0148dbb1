"""Rollout gates: one small class per question, behind a Protocol, found by name in ``GATES``.

A gate answers ``pass``, ``fail`` (enough evidence, and it is bad), ``insufficient`` (not enough
evidence yet: the stage waits), ``skipped`` (the question does not apply, e.g. no confidence
histogram from a regression model, or no old-version baseline at all) or ``disabled``. Every
result carries its value, threshold and sample count: they go into the rollout report as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from fleet_server.services.rollouts.evidence import Evidence, tv_distance
from fleet_server.services.rollouts.spec import (
    ConfidenceGate,
    ErrorRateGate,
    GatePolicy,
    LabelAccuracyGate,
    LatencyGate,
    OfflineGate,
    SuccessRateGate,
)

GateStatus = Literal["pass", "fail", "insufficient", "skipped", "disabled"]


@dataclass(frozen=True)
class GateResult:
    name: str
    status: GateStatus
    value: float | None
    threshold: float
    samples: int
    min_samples: int
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.value is not None:
            data["value"] = round(self.value, 6)
        return data


class Gate(Protocol):
    name: str

    def evaluate(self, evidence: Evidence) -> GateResult:
        """Judge ``evidence``; never raises for missing data (that is ``insufficient``)."""
        ...


class _Base:
    name = ""

    def _result(
        self,
        status: GateStatus,
        value: float | None,
        threshold: float,
        samples: int,
        min_samples: int,
        detail: str = "",
    ) -> GateResult:
        return GateResult(self.name, status, value, threshold, samples, min_samples, detail)


class SuccessRate(_Base):
    """Committed / finished updates. Fails early once the threshold is out of reach."""

    name = "success_rate"

    def __init__(self, config: SuccessRateGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence) -> GateResult:
        c = self.config
        finished = evidence.committed + evidence.failed
        rate = evidence.committed / finished if finished else None
        best_case = evidence.committed + evidence.unfinished
        if evidence.stage_devices and best_case < c.min_rate * evidence.stage_devices:
            detail = f"{evidence.failed} of {evidence.stage_devices} updates failed"
            return self._result("fail", rate, c.min_rate, finished, c.min_samples, detail)
        if finished < c.min_samples or evidence.unfinished:
            detail = f"{evidence.unfinished} updates still running"
            return self._result("insufficient", rate, c.min_rate, finished, c.min_samples, detail)
        status: GateStatus = "pass" if rate is not None and rate >= c.min_rate else "fail"
        return self._result(status, rate, c.min_rate, finished, c.min_samples)


class ErrorRate(_Base):
    """Inference error rate on the new version minus the baseline's (absolute)."""

    name = "error_rate"

    def __init__(self, config: ErrorRateGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence) -> GateResult:
        c = self.config
        new_rate = evidence.new.error_rate
        samples = evidence.new.inferences
        if new_rate is None or samples < c.min_samples:
            return self._result("insufficient", None, c.max_increase, samples, c.min_samples)
        old_rate = evidence.old.error_rate
        increase = new_rate - (old_rate or 0.0)
        detail = f"new {new_rate:.4f} vs old " + (
            f"{old_rate:.4f} ({evidence.baseline})" if old_rate is not None else "n/a (absolute)"
        )
        status: GateStatus = "pass" if increase <= c.max_increase else "fail"
        return self._result(status, increase, c.max_increase, samples, c.min_samples, detail)


class LatencyRatio(_Base):
    """p95 latency new / old per device class (medians of interval p95s); the worst class."""

    name = "latency_p95_ratio"

    def __init__(self, config: LatencyGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence) -> GateResult:
        c = self.config
        ratios: dict[str, float] = {}
        samples = 0
        for device_class, values in evidence.new.p95_by_class.items():
            old = evidence.old.median_p95(device_class)
            new = evidence.new.median_p95(device_class)
            if old is None or new is None:
                continue
            samples += len(values)
            ratios[device_class] = new / old if old > 0 else (1.0 if new == 0 else float("inf"))
        if not evidence.old.p95_by_class:
            if evidence.new.intervals >= c.min_samples:
                detail = "no old-version latency to compare with"
                return self._result("skipped", None, c.max_ratio, 0, c.min_samples, detail)
            return self._result("insufficient", None, c.max_ratio, 0, c.min_samples)
        if samples < c.min_samples or not ratios:
            return self._result("insufficient", None, c.max_ratio, samples, c.min_samples)
        worst_class, worst = max(ratios.items(), key=lambda item: item[1])
        detail = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(ratios.items()))
        status: GateStatus = "pass" if worst <= c.max_ratio else "fail"
        return self._result(
            status, worst, c.max_ratio, samples, c.min_samples, f"worst {worst_class}; {detail}"
        )


class ConfidenceShift(_Base):
    """Total variation distance between the new and old top-1 confidence histograms."""

    name = "confidence_shift"

    def __init__(self, config: ConfidenceGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence) -> GateResult:
        c = self.config
        new, old = evidence.new.histogram, evidence.old.histogram
        samples = sum(new)
        if samples < c.min_samples:
            if evidence.new.inferences >= c.min_samples and not new:
                detail = "the model reports no confidence histogram"
                return self._result("skipped", None, c.max_distance, 0, c.min_samples, detail)
            return self._result("insufficient", None, c.max_distance, samples, c.min_samples)
        distance = tv_distance(new, old)
        if distance is None:
            detail = "no comparable old-version histogram"
            return self._result("skipped", None, c.max_distance, samples, c.min_samples, detail)
        status: GateStatus = "pass" if distance <= c.max_distance else "fail"
        return self._result(status, distance, c.max_distance, samples, c.min_samples)


class Offline(_Base):
    """Share of committed devices that are offline now."""

    name = "offline"

    def __init__(self, config: OfflineGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence) -> GateResult:
        c = self.config
        n = evidence.committed_total
        if n < c.min_samples:
            return self._result("insufficient", None, c.max_fraction, n, c.min_samples)
        fraction = evidence.committed_offline / n
        status: GateStatus = "pass" if fraction <= c.max_fraction else "fail"
        detail = f"{evidence.committed_offline} of {n} offline"
        return self._result(status, fraction, c.max_fraction, n, c.min_samples, detail)


class LabelAccuracy(_Base):
    """Accuracy on labelled samples, new version minus old (per version, all labelled samples;
    ``edgefleet fleet quality`` has the random-only figures). Used when labels exist: with no
    labelled sample of the new version the gate is skipped; with some but fewer than
    ``min_samples`` (on either side) the stage waits for more."""

    name = "label_accuracy"

    def __init__(self, config: LabelAccuracyGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence) -> GateResult:
        c = self.config
        new, old = evidence.new.labels, evidence.old.labels
        threshold = -c.max_drop
        if new.labelled == 0 and old.labelled == 0:
            detail = "no labelled samples of either version"
            return self._result("skipped", None, threshold, 0, c.min_samples, detail)
        if min(new.labelled, old.labelled) < c.min_samples:
            detail = f"labelled samples: new {new.labelled}, old {old.labelled}"
            return self._result("insufficient", None, threshold, new.labelled, c.min_samples,
                                detail)  # fmt: skip
        assert new.accuracy is not None and old.accuracy is not None
        change = new.accuracy - old.accuracy
        detail = (
            f"new {new.accuracy:.4f} ({new.correct}/{new.labelled}) vs old "
            f"{old.accuracy:.4f} ({old.correct}/{old.labelled})"
        )
        status: GateStatus = "pass" if change >= threshold else "fail"
        return self._result(status, change, threshold, new.labelled, c.min_samples, detail)


#: Gate name → constructor from the policy; the order is the report's order.
GATES: dict[str, Callable[[Any], Gate]] = {
    "success_rate": SuccessRate,
    "error_rate": ErrorRate,
    "latency_p95_ratio": LatencyRatio,
    "confidence_shift": ConfidenceShift,
    "offline": Offline,
    "label_accuracy": LabelAccuracy,
}


def evaluate_all(policy: GatePolicy, evidence: Evidence) -> list[GateResult]:
    results = []
    for name, gate_type in GATES.items():
        config = getattr(policy, name)
        if not config.enabled:
            results.append(GateResult(name, "disabled", None, 0.0, 0, 0))
            continue
        gate: Gate = gate_type(config)
        results.append(gate.evaluate(evidence))
    return results
