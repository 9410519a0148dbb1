"""Health-gated commit: a freshly switched model serves on probation until it proves healthy.

The inference thread reports every inference (latency, finite outputs, top-1 confidence) and
every failed one to :class:`HealthMonitor`. Outside probation it keeps a rolling window of the
committed model's latencies: the baseline p95 *on this device*. During probation the new
model's own numbers are judged by :meth:`HealthMonitor.verdict` against :class:`ProbationConfig`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated

from msgspec import Meta

from agent.config_types import ConfigStruct
from edgefleet.contract import ModelRef

#: Latencies of the committed model kept for its baseline p95.
BASELINE_WINDOW = 200


class ProbationConfig(ConfigStruct, frozen=True, kw_only=True):
    """When a new model counts as healthy (config / device profile only, not the desired state)."""

    enabled: Annotated[bool, Meta(description="Judge a new model before committing it.")] = True
    inferences: Annotated[
        int, Meta(ge=1, le=100_000, description="Inferences judged before a model can pass.")
    ] = 20
    max_s: Annotated[
        float,
        Meta(
            gt=0,
            le=86_400,
            description="Longest probation; a model without enough traffic is judged on what it "
            "saw.",
        ),
    ] = 10.0
    max_error_rate: Annotated[
        float, Meta(ge=0, le=1, description="Failed inferences / all inferences above this fail.")
    ] = 0.2
    latency_factor: Annotated[
        float, Meta(gt=1, le=100, description="p95 above this × the previous model's p95 fails.")
    ] = 2.0
    latency_floor_ms: Annotated[
        float,
        Meta(
            ge=0,
            le=60_000,
            description="Baseline p95 used when the previous model was faster than this (sub-ms "
            "latencies jitter by more than the factor).",
        ),
    ] = 1.0
    min_latency_samples: Annotated[
        int, Meta(ge=1, le=10_000, description="Samples of each model before latency is judged.")
    ] = 10
    min_confidence: Annotated[
        float,
        Meta(
            ge=0,
            le=1,
            description="A classifier whose mean top-1 confidence is below this has collapsed.",
        ),
    ] = 0.15


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class _Trial:
    ref: ModelRef
    started: float
    baseline: list[float]
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    nonfinite: int = 0
    confidences: list[float] = field(default_factory=list)

    @property
    def judged(self) -> int:
        return len(self.latencies) + self.errors


class HealthMonitor:
    def __init__(self, config: ProbationConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._baseline: deque[float] = deque(maxlen=BASELINE_WINDOW)
        self._trial: _Trial | None = None

    # -- inference thread ----------------------------------------------------------------------
    def record(
        self, ref: ModelRef, *, latency_ms: float, finite: bool, confidence: float | None
    ) -> None:
        with self._lock:
            trial = self._trial
            if trial is None:
                self._baseline.append(latency_ms)
            elif trial.ref == ref:
                trial.latencies.append(latency_ms)
                trial.nonfinite += not finite
                if confidence is not None:
                    trial.confidences.append(confidence)

    def record_error(self, ref: ModelRef) -> None:
        with self._lock:
            if self._trial is not None and self._trial.ref == ref:
                self._trial.errors += 1

    # -- updater thread -----------------------------------------------------------------------
    def begin(self, ref: ModelRef) -> None:
        """Start judging ``ref`` (just swapped in) against the baseline gathered so far."""
        with self._lock:
            self._trial = _Trial(ref=ref, started=time.monotonic(), baseline=list(self._baseline))

    def end(self, *, committed: bool) -> None:
        """Stop judging; a committed model's latencies become the new baseline."""
        with self._lock:
            trial, self._trial = self._trial, None
            if committed and trial is not None:
                self._baseline.clear()
                self._baseline.extend(trial.latencies[-BASELINE_WINDOW:])

    def verdict(self) -> tuple[bool, str] | None:
        """``(passed, reason)`` once decided; None while still on probation."""
        cfg = self.config
        with self._lock:
            trial = self._trial
            if trial is None:
                return None
            if trial.nonfinite:
                return False, f"{trial.nonfinite} inference(s) produced NaN or Inf outputs"
            timed_out = time.monotonic() - trial.started >= cfg.max_s
            if trial.judged < cfg.inferences and not timed_out:
                return None
            if trial.judged:
                rate = trial.errors / trial.judged
                if rate > cfg.max_error_rate:
                    return False, f"error rate {rate:.0%} over {trial.judged} inferences"
            n = cfg.min_latency_samples
            if len(trial.latencies) >= n and len(trial.baseline) >= n:
                new, old = p95(trial.latencies), p95(trial.baseline)
                if new > cfg.latency_factor * max(old, cfg.latency_floor_ms):
                    return False, f"latency p95 {new:.3f} ms vs {old:.3f} ms of the previous model"
            if trial.confidences:
                mean = sum(trial.confidences) / len(trial.confidences)
                if mean < cfg.min_confidence:
                    return False, f"classifier confidence collapsed (mean top-1 {mean:.3f})"
            return True, f"healthy over {trial.judged} inferences"
