"""What an operator asks for: target selector, stage strategy and gate thresholds (typed, strict).

Defaults are the conservative choice a fleet operator would make: a canary of 10 % (at least one
device), then half, then everyone; a five-minute soak per stage; abort (roll back) on a failing
gate.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefleet.contract.pydantic_types import DeviceId, ModelName, ModelVersion
from fleet_server.models.devices import Tags


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Selector(Strict):
    """Which devices: every listed id, plus every device that has all ``tags`` and (if given)
    one of ``device_classes``."""

    tags: Tags = Field(default_factory=list, max_length=32, description="All of these tags.")
    device_classes: list[str] = Field(
        default_factory=list, max_length=32, description="Any of these device classes."
    )
    device_ids: list[DeviceId] = Field(
        default_factory=list, max_length=10_000, description="These devices, explicitly."
    )

    @field_validator("device_classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        for name in value:
            if not 0 < len(name) <= 64:
                raise ValueError("a device class is 1-64 characters")
        return sorted(set(value))

    @model_validator(mode="after")
    def _not_everything_by_accident(self) -> Selector:
        if not (self.tags or self.device_classes or self.device_ids):
            raise ValueError("the selector is empty: give tags, device_classes or device_ids")
        return self

    def matches(self, *, device_id: str, tags: list[str], device_class: str | None) -> bool:
        if device_id in self.device_ids:
            return True
        if not (self.tags or self.device_classes):
            return False
        if not set(self.tags) <= set(tags):
            return False
        return not self.device_classes or device_class in self.device_classes


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow(Strict):
    """New devices are assigned only inside this daily UTC window (``end`` < ``start`` wraps
    past midnight); devices already updating carry on outside it."""

    start: time = Field(description="UTC time of day, e.g. '02:00'.")
    end: time = Field(description="UTC time of day, e.g. '05:00'.")
    days: list[Day] = Field(default_factory=lambda: list(_DAYS), min_length=1, max_length=7)

    @model_validator(mode="after")
    def _nonempty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError("the maintenance window is empty (start == end)")
        return self

    def open_at(self, now: datetime) -> bool:
        now = now.astimezone(UTC)
        t = now.time().replace(tzinfo=None)
        if self.start < self.end:
            inside, day = self.start <= t < self.end, now.weekday()
        else:  # wraps midnight: the part after midnight belongs to the previous day's window
            inside = t >= self.start or t < self.end
            day = now.weekday() if t >= self.start else (now.weekday() - 1) % 7
        return inside and _DAYS[day] in self.days


class ShadowStage(Strict):
    """Before the canary: every device of the rollout runs the candidate in shadow beside what it
    serves (the candidate answers nothing) for ``shadow_s``; per device class, the paired figures
    must then pass these thresholds, else the rollout aborts with no desired model changed."""

    shadow_s: float = Field(
        gt=0, le=7 * 86_400, description="Run the shadow at least this long (seconds)."
    )
    sample_rate: float = Field(
        default=0.1, gt=0, le=1, description="Share of served inputs offered to the shadow."
    )
    cpu_budget: float = Field(
        default=0.25, gt=0, le=1, description="Shadow thread CPU time, fraction of one core."
    )
    min_agreement: float = Field(
        default=0.98, ge=0, le=1, description="Paired inputs that agree, share, at least."
    )
    max_latency_ratio: float = Field(
        default=1.5, gt=0, le=1000, description="Paired p95 latency shadow / serving, at most."
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Shadow failures / (paired + failures), at most."
    )
    min_samples: int = Field(
        default=50, ge=1, le=10_000_000, description="Paired inputs each device class needs."
    )


class Strategy(Strict):
    shadow: ShadowStage | None = Field(
        default=None,
        description="A shadow stage before the canary (null: the canary starts at once).",
    )
    canary_percent: float = Field(default=10.0, gt=0, le=100, description="Canary stage size.")
    canary_min_devices: int = Field(default=1, ge=1, le=10_000)
    batches: list[float] = Field(
        default_factory=lambda: [50.0, 100.0],
        min_length=1,
        max_length=20,
        description="Cumulative percentages after the canary, increasing, ending at 100.",
    )
    rate_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="At most this many devices assigned a minute."
    )
    require_approval: bool = Field(
        default=False, description="Wait for an operator's approve between stages."
    )
    maintenance_window: MaintenanceWindow | None = None
    soak_s: float = Field(
        default=300.0, ge=0, le=7 * 86_400, description="Watch a finished stage this long."
    )
    update_timeout_s: float = Field(
        default=900.0, gt=0, le=7 * 86_400, description="An update not finished by then failed."
    )
    stage_timeout_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        le=30 * 86_400,
        description="A stage whose gates still lack evidence by then pauses for the operator.",
    )
    on_failure: Literal["abort", "pause"] = Field(
        default="abort", description="What a failing gate does: roll back, or wait for an operator."
    )

    @field_validator("batches")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(not 0 < p <= 100 for p in value):
            raise ValueError("batch percentages are in (0, 100]")
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError("batch percentages must increase")
        if value[-1] != 100:
            raise ValueError("the last batch must be 100 (every targeted device)")
        return value

    @model_validator(mode="after")
    def _canary_first(self) -> Strategy:
        if self.canary_percent >= self.batches[0] and len(self.batches) > 1:
            raise ValueError("the canary must be smaller than the first batch")
        return self

    def stage_count(self) -> int:
        return 1 + len(self.batches)

    def stage_names(self) -> list[str]:
        return ["canary"] + [f"batch-{i + 1} ({p:g}%)" for i, p in enumerate(self.batches)]

    def target_count(self, stage: int, total: int) -> int:
        """How many devices (by position) stages 0..``stage`` cover together."""
        if total == 0:
            return 0
        if stage == 0:
            wanted = math.ceil(total * self.canary_percent / 100)
            return min(total, max(self.canary_min_devices, wanted))
        return max(self.target_count(0, total), math.ceil(total * self.batches[stage - 1] / 100))


class SuccessRateGate(Strict):
    enabled: bool = True
    min_rate: float = Field(default=0.95, ge=0, le=1, description="committed / finished")
    min_samples: int = Field(default=1, ge=1, description="Finished updates needed.")


class ErrorRateGate(Strict):
    enabled: bool = True
    max_increase: float = Field(
        default=0.01, ge=0, le=1, description="New error rate minus old, absolute."
    )
    min_samples: int = Field(default=50, ge=1, description="Inferences on the new version.")


class LatencyGate(Strict):
    enabled: bool = True
    max_ratio: float = Field(
        default=1.25,
        gt=0,
        description="p95 new / old, same device class: fails when the ratio is significantly "
        "above this (its lower confidence bound is), so a 1.5x slower version is stopped.",
    )
    min_samples: int = Field(default=3, ge=1, description="Telemetry intervals on the new version.")


class ConfidenceGate(Strict):
    enabled: bool = True
    max_distance: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Largest gap between the binned CDFs of top-1 confidence (Kolmogorov-"
        "Smirnov distance, 0-1), significantly beyond which the gate fails.",
    )
    direction: Literal["lower", "both"] = Field(
        default="lower",
        description="'lower': only a shift toward lower confidence counts (a more confident "
        "version passes); 'both': any shift.",
    )
    min_samples: int = Field(default=50, ge=1, description="Inferences on the new version.")


class OfflineGate(Strict):
    enabled: bool = True
    max_fraction: float = Field(
        default=0.1, ge=0, le=1, description="Committed devices gone offline since."
    )
    min_samples: int = Field(default=1, ge=1, description="Committed devices.")
    grace_s: float = Field(
        default=60,
        ge=0,
        le=86400,
        description="A committed device counts as offline once it has been offline this long "
        "(its offline status received this long ago): a broker or server restart, or a network "
        "blip, takes every device offline for the seconds it needs to reconnect.",
    )


class LabelAccuracyGate(Strict):
    enabled: bool = True
    max_drop: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="How far the new version's accuracy on labelled samples may fall below the "
        "old version's (absolute).",
    )
    min_samples: int = Field(
        default=50,
        ge=1,
        description="Labelled samples each version needs before the gate judges; with some "
        "labels but fewer the stage waits; with none at all the gate is skipped.",
    )


class GatePolicy(Strict):
    success_rate: SuccessRateGate = Field(default_factory=SuccessRateGate)
    error_rate: ErrorRateGate = Field(default_factory=ErrorRateGate)
    latency_p95_ratio: LatencyGate = Field(default_factory=LatencyGate)
    confidence_shift: ConfidenceGate = Field(default_factory=ConfidenceGate)
    offline: OfflineGate = Field(default_factory=OfflineGate)
    label_accuracy: LabelAccuracyGate = Field(default_factory=LabelAccuracyGate)
    baseline_window_s: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86_400,
        description="How far back old-version telemetry counts as the baseline.",
    )
    settle_intervals: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Each device's first telemetry intervals on the new version are not judged: "
        "the update settling (download finishing, warm-up), not the model's steady state.",
    )
    alpha: float = Field(
        default=0.001,
        gt=0,
        lt=0.5,
        description="False-alarm rate of each gate's one-sided test once a stage has soaked: a "
        "gate fails only when its regression is significant at this level and beyond its "
        "threshold. Small because a gate is asked at every evaluation of every stage (tens of "
        "looks at growing evidence, six gates): bench/gate_bench.py measures the rollout-level "
        "false-abort rate this gives.",
    )
    early_alpha: float = Field(
        default=0.0001,
        gt=0,
        lt=0.5,
        description="The (smaller) false-alarm rate before a stage's soak ends: a stage fails "
        "early only when a gate is clearly out of reach.",
    )

    @model_validator(mode="after")
    def _early_is_stricter(self) -> GatePolicy:
        if self.early_alpha > self.alpha:
            raise ValueError("early_alpha must not be larger than alpha")
        return self


class CompareRequirement(Strict):
    """Refuse the rollout unless a stored comparison of the candidate against every version it
    replaces (``edgefleet fleet models compare``) stays within these thresholds."""

    max_agreement_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="How far the task's agreement may fall below 1 (1 - agreement), at most.",
    )
    max_accuracy_drop: float | None = Field(
        default=0.02,
        ge=0,
        le=1,
        description="How far labelled accuracy may fall (baseline - candidate), at most; a "
        "comparison without labels is refused unless this is null (not checked).",
    )
    max_latency_ratio: float = Field(
        default=1.5, gt=0, le=1000, description="Median latency candidate / baseline, at most."
    )


class RolloutCreate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    model: ModelName
    version: ModelVersion
    selector: Selector
    strategy: Strategy = Field(default_factory=Strategy)
    gates: GatePolicy = Field(default_factory=GatePolicy)
    require_compare: CompareRequirement | None = Field(
        default=None,
        description="Refuse (422) unless a stored comparison against the replaced version "
        "passes these thresholds; null: no comparison needed.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "digits",
                    "version": "1.1.0",
                    "selector": {"tags": ["line-3"], "device_classes": ["rpi4"]},
                    "strategy": {"canary_percent": 5, "batches": [25, 100], "soak_s": 600},
                    "gates": {"latency_p95_ratio": {"max_ratio": 1.2}},
                }
            ]
        },
    )
