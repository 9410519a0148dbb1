"""The latency gate: p95 of the new version against the old, per device class, with a one-sided
confidence bound on the log scale (:mod:`.stats`).

Its evidence, best first (issue #14): the candidate's **shadow** reports beside the version it
replaces (each interval's shadow p95 / serving p95 on the *same* inputs, a paired ratio per
device); the canary's own **pre-update** history (each device against itself); **control**
devices (devices as units, since they see other inputs). Shadow evidence is used once it has
``min_samples`` intervals; until then the telemetry baseline decides and the detail says how
much shadow evidence there is.
"""

from __future__ import annotations

import math

from fleet_server.services.rollouts.evidence import Evidence
from fleet_server.services.rollouts.gate_result import GateBase, GateResult, GateStatus
from fleet_server.services.rollouts.spec import LatencyGate
from fleet_server.services.rollouts.stats import (
    PATIENCE,
    Interval,
    MeanDifference,
    fixed_mean,
    judge,
    pooled_difference,
    welch_sum,
)


def _logs(values: list[float]) -> list[float]:
    return [math.log(v) for v in values if math.isfinite(v) and v > 0]


def _exp(value: float) -> float:
    """exp() that saturates (a t bound with one degree of freedom can be astronomically wide)."""
    return math.inf if value > 700 else math.exp(value)


def _geo_mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


#: Per device class: the point estimate of the log ratio and its spread (None: unknown).
LogDifferences = dict[str, tuple[float, MeanDifference | None]]


class LatencyRatio(GateBase):
    """p95 latency new / old per device class, as the ratio of geometric means of interval p95s
    with a t interval on the log scale (Bonferroni over the classes); the worst class is reported.

    On shadow evidence each device's intervals are paired ratios on the same inputs (their mean
    per device, fixed effects over devices). Against the pre-update baseline each device is
    compared with its own history (paired: the inputs it sees do not change with the update);
    against control devices the unit is a device (its mean log p95), so that devices that see
    different inputs do not pass for a regression.
    """

    name = "latency_p95_ratio"

    def __init__(self, config: LatencyGate) -> None:
        self.config = config

    def _difference(
        self, evidence: Evidence, device_class: str
    ) -> tuple[float, MeanDifference | None]:
        new_devices = evidence.new.devices_of(device_class)
        old_devices = evidence.old.devices_of(device_class)
        if evidence.baseline == "pre-update":
            parts = [
                (_logs(evidence.new.p95_by_device[d]), _logs(evidence.old.p95_by_device[d]))
                for d in sorted(new_devices & old_devices)
            ]
            parts = [(a, b) for a, b in parts if a and b]
            point = (
                _geo_mean([_geo_mean(a) - _geo_mean(b) for a, b in parts]) if parts else math.nan
            )
            return point, welch_sum(parts)
        new_units = [
            _geo_mean(v) for d in sorted(new_devices) if (v := _logs(evidence.new.p95_by_device[d]))
        ]
        old_units = [
            _geo_mean(v) for d in sorted(old_devices) if (v := _logs(evidence.old.p95_by_device[d]))
        ]
        if not new_units or not old_units:
            return math.nan, None
        point = _geo_mean(new_units) - _geo_mean(old_units)
        return point, pooled_difference(new_units, old_units)

    def _shadow(self, evidence: Evidence, *, alpha: float) -> GateResult | None:
        """The verdict on shadow evidence; None when it has fewer than ``min_samples``
        intervals (the telemetry baseline decides)."""
        pairs = evidence.shadow
        samples = sum(len(v) for v in pairs.log_ratio_by_device.values())
        if samples < self.config.min_samples:
            return None
        differences: LogDifferences = {}
        for device_class in sorted(pairs.classes()):
            parts = [v for _, v in sorted(pairs.latency_intervals(device_class).items())]
            point = _geo_mean([_geo_mean(p) for p in parts])
            differences[device_class] = (point, fixed_mean(parts))
        how = (
            f"shadow p95 / serving p95 on the same inputs ({len(pairs.log_ratio_by_device)} "
            "devices)"
        )
        return self._judge(differences, samples, alpha=alpha, evidence="shadow", how=how)

    def evaluate(self, evidence: Evidence, *, alpha: float) -> GateResult:
        c = self.config
        threshold = c.max_ratio
        shadow = self._shadow(evidence, alpha=alpha)
        if shadow is not None:
            return shadow
        kind = evidence.baseline
        if not evidence.old.p95_by_class:
            if evidence.new.intervals < c.min_samples:
                return self._needs(
                    "intervals on the new version",
                    evidence.new.intervals,
                    c.min_samples,
                    threshold,
                    evidence=kind,
                )
            if evidence.awaits_baseline(self.name):  # the old version ran: its figures come
                return self._needs(
                    "intervals of the replaced version (none yet)",
                    0,
                    c.min_samples,
                    threshold,
                    evidence=kind,
                )
            detail = "no old-version latency to compare with" + _thin(evidence)
            return self._result("skipped", None, threshold, 0, c.min_samples, detail, evidence=kind)
        classes = sorted(set(evidence.new.p95_by_class) & set(evidence.old.p95_by_class))
        if (
            not classes
            and evidence.new.intervals >= c.min_samples
            and not evidence.awaits_baseline(self.name)
        ):
            detail = "no old-version latency of the same device classes to compare with"
            return self._result(
                "skipped",
                None,
                threshold,
                0,
                c.min_samples,
                detail + _thin(evidence),
                evidence=kind,
            )
        samples = sum(len(evidence.new.p95_by_class[k]) for k in classes)
        if samples < c.min_samples or not classes:
            return self._needs(
                "intervals on the new version (in classes with a baseline)",
                samples,
                c.min_samples,
                threshold,
                evidence=kind,
            )
        differences = {k: self._difference(evidence, k) for k in classes}
        return self._judge(
            differences, samples, alpha=alpha, evidence=kind, how=_thin(evidence).lstrip("; ")
        )

    def _judge(
        self,
        differences: LogDifferences,
        samples: int,
        *,
        alpha: float,
        evidence: str,
        how: str,
    ) -> GateResult:
        """One verdict per class at ``alpha`` / classes, the worst class reported."""
        c = self.config
        threshold = c.max_ratio
        per_class_alpha = alpha / max(1, len(differences))
        verdicts: dict[str, tuple[str, Interval]] = {}
        notes: list[str] = []
        for device_class, (point, difference) in differences.items():
            if math.isnan(point):
                continue
            if difference is None:
                log_interval = Interval(point, -math.inf, math.inf)
                notes.append(
                    f"{device_class}: cannot estimate the spread (needs 2 intervals "
                    "per device on each side, or 3 devices)"
                )
            else:
                log_interval = difference.interval(alpha=per_class_alpha)
                point = log_interval.estimate
            interval = Interval(*(_exp(v) for v in (point, log_interval.low, log_interval.high)))
            verdict, _why = judge(
                interval,
                threshold,
                alpha=per_class_alpha,
                patient=samples < PATIENCE * c.min_samples,
            )
            verdicts[device_class] = (verdict, interval)
        if not verdicts:
            return self._needs(
                "devices with latency on both sides", 0, 1, threshold, evidence=evidence
            )
        worst_class, (_s, worst) = max(verdicts.items(), key=lambda kv: kv[1][1].estimate)
        statuses = {s for s, _ in verdicts.values()}
        status: GateStatus = (
            "fail" if "fail" in statuses else "wait" if "wait" in statuses else "pass"
        )
        detail = f"worst {worst_class}; " + ", ".join(
            f"{k}: {v.estimate:.3f} [{v.low:.3f}, {v.high:.3f}] {s}"
            for k, (s, v) in sorted(verdicts.items())
        )
        if status == "wait":
            detail += f"; a ratio beyond {threshold:g}: needs more evidence"
        if notes:
            detail += "; " + "; ".join(notes)
        if how:
            detail += f"; {how}"
        return self._result(
            status,
            worst.estimate,
            threshold,
            samples,
            c.min_samples,
            detail,
            worst,
            per_class_alpha,
            evidence,
        )


def _thin(evidence: Evidence) -> str:
    """What shadow evidence there is when it is too thin to decide on (else nothing)."""
    n = sum(len(v) for v in evidence.shadow.log_ratio_by_device.values())
    return f"; shadow evidence too thin ({n} intervals)" if n else ""
