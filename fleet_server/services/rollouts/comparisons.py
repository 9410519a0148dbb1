"""The gates that compare the new version with the baseline, each with a one-sided confidence
bound (:mod:`.stats`): error rate, latency, confidence histogram, labelled accuracy. Devices see
different inputs, so comparisons are made device by device against their own history where the
evidence allows, and with devices as units otherwise (issue #14)."""

from __future__ import annotations

import math
from dataclasses import replace

from fleet_server.services.quality.metrics import wilson
from fleet_server.services.rollouts.evidence import Evidence
from fleet_server.services.rollouts.gate_result import GateBase, GateResult
from fleet_server.services.rollouts.spec import (
    ConfidenceGate,
    ErrorRateGate,
    LabelAccuracyGate,
)
from fleet_server.services.rollouts.stats import (
    PATIENCE,
    Interval,
    fixed_mean,
    judge,
    paired_cdf_shift,
    proportion_difference,
    stratified_difference,
    unit_cdf_shift,
    z_quantile,
)


class ErrorRate(GateBase):
    """Inference error rate on the new version minus the baseline's (absolute), with Newcombe's
    interval; against zero when there is no baseline (Wilson)."""

    name = "error_rate"

    def __init__(self, config: ErrorRateGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence, *, alpha: float) -> GateResult:
        c = self.config
        new, old = evidence.new, evidence.old
        if new.inferences < c.min_samples:
            return self._needs(
                "inferences on the new version", new.inferences, c.min_samples, c.max_increase
            )
        if old.inferences:
            interval = proportion_difference(
                new.errors, new.inferences, old.errors, old.inferences, alpha=alpha
            )
            versus = f"old {old.errors}/{old.inferences} ({evidence.baseline})"
        else:
            low, high = wilson(new.errors, new.inferences, z_quantile(alpha))
            interval = Interval(new.errors / new.inferences, low, high)
            versus = "no baseline: absolute"
        status, why = judge(
            interval, c.max_increase, alpha=alpha, patient=new.inferences < PATIENCE * c.min_samples
        )
        detail = f"new {new.errors}/{new.inferences} vs {versus}" + (f"; {why}" if why else "")
        return self._result(
            status,
            interval.estimate,
            c.max_increase,
            new.inferences,
            c.min_samples,
            detail,
            interval,
            alpha,
        )


def _usable(histogram: list[int], bins: int) -> bool:
    return len(histogram) == bins and sum(histogram) > 0


class ConfidenceShift(GateBase):
    """How far the new version's top-1 confidence histogram moves below the old one's: the
    largest gap between the binned CDFs (Kolmogorov-Smirnov), one-sided by default so that a
    *more* confident candidate passes. Devices see different inputs, so histograms are compared
    device by device (against their own history) or with devices as units (against control
    devices): :func:`.stats.paired_cdf_shift`, :func:`.stats.unit_cdf_shift`."""

    name = "confidence_shift"

    def __init__(self, config: ConfidenceGate) -> None:
        self.config = config

    def _shadow(self, evidence: Evidence, *, alpha: float) -> tuple[GateResult | None, str]:
        """The verdict on shadow evidence: the mean |Δ top-1 confidence| of the two versions on
        the same inputs (it bounds how far the confidence distribution moved, in Wasserstein
        distance), per device and interval, fixed effects over devices. None (and why) when
        there are fewer than ``min_samples`` paired inputs, or when one-sided and not within
        the threshold: reports carry |Δ| only, so a rise and a fall look alike and the
        telemetry baseline decides."""
        c = self.config
        pairs = evidence.shadow
        samples = pairs.conf_paired()
        if samples < c.min_samples:
            return None, f"shadow evidence too thin ({samples} paired inputs)" if samples else ""
        parts = [[d for d, _ in v] for _, v in sorted(pairs.conf_delta_by_device.items())]
        difference = fixed_mean(parts)
        point = math.fsum(math.fsum(p) / len(p) for p in parts) / len(parts)
        interval = (
            difference.interval(alpha=alpha)
            if difference is not None
            else Interval(point, -math.inf, math.inf)
        )
        status, why = judge(
            interval, c.max_distance, alpha=alpha, patient=samples < PATIENCE * c.min_samples
        )
        agreement = pairs.agreement
        how = (
            f"mean |delta confidence| on the same inputs ({len(parts)} devices, shadow); "
            f"top-1 agreement {agreement:.3f} ({pairs.paired - pairs.disagreements}/{pairs.paired})"
            if agreement is not None
            else "mean |delta confidence| on the same inputs (shadow)"
        )
        if status != "pass" and c.direction != "both":
            return None, f"shadow |delta confidence| {interval.estimate:.3g} {why} (either way)"
        detail = how + (f"; {why}" if why else "")
        result = self._result(
            status,
            interval.estimate,
            c.max_distance,
            samples,
            c.min_samples,
            detail,
            interval,
            alpha,
            "shadow",
        )
        return result, ""

    def evaluate(self, evidence: Evidence, *, alpha: float) -> GateResult:
        shadow, note = self._shadow(evidence, alpha=alpha)
        if shadow is not None:
            return shadow
        result = self._telemetry(evidence, alpha=alpha)
        if note:
            result = replace(result, detail=f"{result.detail}; {note}".lstrip("; "))
        return result

    def _telemetry(self, evidence: Evidence, *, alpha: float) -> GateResult:
        c = self.config
        new, old = evidence.new.histogram, evidence.old.histogram
        samples = sum(new)
        if samples < c.min_samples:
            if evidence.new.inferences >= c.min_samples and not new:
                detail = "the model reports no confidence histogram"
                return self._result("skipped", None, c.max_distance, 0, c.min_samples, detail)
            return self._needs(
                "inferences with a confidence on the new version",
                samples,
                c.min_samples,
                c.max_distance,
            )
        if evidence.awaits_baseline(self.name) and not sum(old):  # the old version ran
            return self._needs(
                "inferences of the replaced version (none yet)", 0, c.min_samples, c.max_distance
            )
        if not old or len(old) != len(new) or not sum(old):
            detail = "no comparable old-version histogram"
            return self._result("skipped", None, c.max_distance, samples, c.min_samples, detail)
        both = c.direction == "both"
        bins = len(new)
        if evidence.baseline == "pre-update":
            pairs = [
                (evidence.new.hist_by_device[d], evidence.old.hist_by_device[d])
                for d in sorted(set(evidence.new.hist_by_device) & set(evidence.old.hist_by_device))
            ]
            pairs = [(a, b) for a, b in pairs if _usable(a, bins) and _usable(b, bins)]
            if not pairs:
                return self._needs("devices with histograms before and after", 0, 1, c.max_distance)
            interval = paired_cdf_shift(pairs, alpha=alpha, both=both)
            how = f"each device against its own history ({len(pairs)} devices)"
        else:
            new_units = [h for h in evidence.new.hist_by_device.values() if _usable(h, bins)]
            old_units = [h for h in evidence.old.hist_by_device.values() if _usable(h, bins)]
            if not new_units or not old_units:
                return self._needs("devices with histograms on both sides", 0, 1, c.max_distance)
            interval = unit_cdf_shift(new_units, old_units, alpha=alpha, both=both)
            how = f"{len(new_units)} devices against {len(old_units)} other devices"
        status, why = judge(
            interval, c.max_distance, alpha=alpha, patient=samples < PATIENCE * c.min_samples
        )
        direction = "toward lower confidence" if not both else "either way"
        detail = f"{direction}; {how}" + (f"; {why}" if why else "")
        return self._result(
            status,
            interval.estimate,
            c.max_distance,
            samples,
            c.min_samples,
            detail,
            interval,
            alpha,
        )


class LabelAccuracy(GateBase):
    """Accuracy on labelled samples, new version minus old (per version, all labelled samples;
    ``edgefleet fleet quality`` has the random-only figures). Devices see different inputs, so
    each device's labels on the new version are compared with its own on the old one (weighted
    by its new labels); with no such device it can pass a within-threshold change but never
    fails (it waits). Used when labels exist: with no labelled sample of either version the
    gate is skipped; with some but fewer than ``min_samples`` (on either side) it waits."""

    name = "label_accuracy"

    def __init__(self, config: LabelAccuracyGate) -> None:
        self.config = config

    def evaluate(self, evidence: Evidence, *, alpha: float) -> GateResult:
        c = self.config
        new, old = evidence.new.labels, evidence.old.labels
        threshold = -c.max_drop
        if new.labelled == 0 and old.labelled == 0:
            detail = "no labelled samples of either version"
            return self._result("skipped", None, threshold, 0, c.min_samples, detail)
        if min(new.labelled, old.labelled) < c.min_samples:
            detail = (
                f"needs {c.min_samples} labelled samples of each version: "
                f"new {new.labelled}, old {old.labelled}"
            )
            return self._result("wait", None, threshold, new.labelled, c.min_samples, detail)
        by_new, by_old = evidence.new.labels_by_device, evidence.old.labels_by_device
        common = sorted(
            d for d in set(by_new) & set(by_old) if by_new[d].labelled and by_old[d].labelled
        )
        strata = [
            (by_new[d].correct, by_new[d].labelled, by_old[d].correct, by_old[d].labelled)
            for d in common
        ]
        if strata:
            change = stratified_difference(strata, alpha=alpha)
            how = f"each device against its own labels ({len(common)} devices)"
        else:
            # Only different devices have labels of the two versions: between devices that see
            # different inputs accuracy differs far more than max_drop, so this can tell a
            # within-threshold change (pass) but never a significant drop (it waits).
            point = new.correct / new.labelled - old.correct / old.labelled
            change = Interval(point, -math.inf, math.inf)
            how = "no device has labels of both versions"
        drop = Interval(-change.estimate, -change.high, -change.low)
        status, why = judge(
            drop, c.max_drop, alpha=alpha, patient=new.labelled < PATIENCE * c.min_samples
        )
        detail = f"new {new.correct}/{new.labelled} vs old {old.correct}/{old.labelled}; {how}"
        if why:
            detail += f"; a drop {why}"
        return self._result(
            status, change.estimate, threshold, new.labelled, c.min_samples, detail, change, alpha
        )
