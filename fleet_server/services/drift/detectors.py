"""Drift detectors: compare what a model version does now (the window) with what it did when it
started serving (its reference), both summed over the whole fleet.

Each detector is a small class behind :class:`DriftDetector`, registered by hand in
:data:`DETECTORS`, with its threshold and minimum sample count from :class:`DriftConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from fleet_server.services.drift.aggregate import Aggregate, DetectorConfig, DriftResult, Status
from fleet_server.services.drift.input_detectors import (
    ClassShift,
    ClassShiftConfig,
    InputDistance,
    InputJsConfig,
    InputPsiConfig,
)
from fleet_server.services.drift.triggers import ModelTriggers

__all__ = [
    "DETECTORS",
    "Aggregate",
    "DetectorConfig",
    "DriftConfig",
    "DriftResult",
    "Status",
    "detectors_for",
]


class ConfidenceShiftConfig(DetectorConfig):
    threshold: float = Field(
        default=0.25, gt=0, le=1, description="Total variation distance that counts as drift."
    )


class ConfidenceDropConfig(DetectorConfig):
    threshold: float = Field(
        default=0.1, gt=0, le=1, description="Drop of the mean top-1 confidence (absolute)."
    )


class ErrorRateRiseConfig(DetectorConfig):
    threshold: float = Field(
        default=0.05, gt=0, le=1, description="Rise of the error rate (absolute) over reference."
    )


class DriftConfig(BaseModel):
    """What drift is, and how often it is looked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Off: no drift job runs.")
    interval_s: float = Field(default=60.0, gt=0, le=86_400, description="How often it runs.")
    bucket_s: int = Field(
        default=300, ge=1, le=86_400, description="Telemetry is summed into buckets this long."
    )
    window_s: float = Field(
        default=3600.0, gt=0, le=30 * 86_400, description="'Now': the most recent this long."
    )
    reference_s: float = Field(
        default=86_400.0,
        gt=0,
        le=90 * 86_400,
        description="The reference: a version's first this long of telemetry on the fleet.",
    )
    settle_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="Telemetry younger than this is left for the next run (ingest may still "
        "be committing rows received before it).",
    )
    confidence_shift: ConfidenceShiftConfig = Field(default_factory=ConfidenceShiftConfig)
    confidence_drop: ConfidenceDropConfig = Field(default_factory=ConfidenceDropConfig)
    error_rate_rise: ErrorRateRiseConfig = Field(default_factory=ErrorRateRiseConfig)
    input_psi: InputPsiConfig = Field(default_factory=InputPsiConfig)
    input_js: InputJsConfig = Field(default_factory=InputJsConfig)
    input_class_shift: ClassShiftConfig = Field(default_factory=ClassShiftConfig)
    triggers: dict[str, ModelTriggers] = Field(
        default_factory=dict,
        max_length=1000,
        description="Retraining triggers beyond drift, by model name: accuracy_drop, "
        "labelled_count, schedule (services/drift/triggers.py).",
    )
    segments: bool = Field(
        default=True,
        description="Also judge the input detectors per device class and per tag (named "
        "'input_psi[class=pi4]', 'input_js[tag=dock-3]').",
    )


class DriftDetector(Protocol):
    name: str

    def evaluate(self, window: Aggregate, reference: Aggregate) -> DriftResult:
        """Judge the window against the reference; insufficient, never an exception, when
        there is too little data."""
        ...


def _verdict(drift: bool) -> Status:
    return "drift" if drift else "ok"


class ConfidenceShift:
    """The shape of the top-1 confidence distribution moved: total variation distance."""

    name = "confidence_shift"

    def __init__(self, config: ConfidenceShiftConfig) -> None:
        self.config = config

    def evaluate(self, window: Aggregate, reference: Aggregate) -> DriftResult:
        n, ref_n = window.confidences, reference.confidences
        base = (self.name, self.config.threshold, n, ref_n)
        if min(n, ref_n) < self.config.min_samples or len(window.histogram) != len(
            reference.histogram
        ):
            return DriftResult(self.name, "insufficient", None, base[1], n, ref_n)
        distance = 0.5 * sum(
            abs(a / n - b / ref_n)
            for a, b in zip(window.histogram, reference.histogram, strict=True)
        )
        return DriftResult(
            self.name,
            _verdict(distance > self.config.threshold),
            distance,
            self.config.threshold,
            n,
            ref_n,
            f"TV distance {distance:.3f} over {len(window.histogram)} bins",
        )


class ConfidenceDrop:
    """The model became less sure of itself: mean top-1 confidence fell."""

    name = "confidence_drop"

    def __init__(self, config: ConfidenceDropConfig) -> None:
        self.config = config

    def evaluate(self, window: Aggregate, reference: Aggregate) -> DriftResult:
        n, ref_n = window.confidences, reference.confidences
        now, then = window.mean_confidence(), reference.mean_confidence()
        if min(n, ref_n) < self.config.min_samples or now is None or then is None:
            return DriftResult(self.name, "insufficient", None, self.config.threshold, n, ref_n)
        drop = then - now
        return DriftResult(
            self.name,
            _verdict(drop > self.config.threshold),
            drop,
            self.config.threshold,
            n,
            ref_n,
            f"mean confidence {then:.3f} → {now:.3f}",
        )


class ErrorRateRise:
    """Inputs the model cannot handle any more: the error rate rose."""

    name = "error_rate_rise"

    def __init__(self, config: ErrorRateRiseConfig) -> None:
        self.config = config

    def evaluate(self, window: Aggregate, reference: Aggregate) -> DriftResult:
        n, ref_n = window.inferences + window.errors, reference.inferences + reference.errors
        now, then = window.error_rate(), reference.error_rate()
        if min(n, ref_n) < self.config.min_samples or now is None or then is None:
            return DriftResult(self.name, "insufficient", None, self.config.threshold, n, ref_n)
        rise = now - then
        return DriftResult(
            self.name,
            _verdict(rise > self.config.threshold),
            rise,
            self.config.threshold,
            n,
            ref_n,
            f"error rate {then:.4f} → {now:.4f}",
        )


def _shift(config: DriftConfig) -> DriftDetector:
    return ConfidenceShift(config.confidence_shift)


def _drop(config: DriftConfig) -> DriftDetector:
    return ConfidenceDrop(config.confidence_drop)


def _errors(config: DriftConfig) -> DriftDetector:
    return ErrorRateRise(config.error_rate_rise)


#: detector name → factory from the drift config (hand-written: no discovery).
DETECTORS: dict[str, Callable[[DriftConfig], DriftDetector]] = {
    "confidence_shift": _shift,
    "confidence_drop": _drop,
    "error_rate_rise": _errors,
    "input_psi": lambda config: InputDistance("input_psi", "psi", config.input_psi),
    "input_js": lambda config: InputDistance("input_js", "js", config.input_js),
    "input_class_shift": lambda config: ClassShift(config.input_class_shift),
}


def detectors_for(config: DriftConfig) -> list[DriftDetector]:
    return [factory(config) for name, factory in DETECTORS.items() if getattr(config, name).enabled]
