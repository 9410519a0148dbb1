"""Per-interval telemetry: counters, a latency histogram, confidences and host gauges.

Latency goes into a fixed log-spaced histogram (50 bins per decade, 1 µs .. 100 s), so memory
is constant however many inferences run and a percentile is within ~2.3 % of the exact value.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.memory import rss_mb
from edgefleet.contract import InputStats, LatencySummary, ModelRef, ShadowReport, Telemetry

BINS_PER_DECADE = 50
LOW_MS = 1e-3
DECADES = 8
N_BINS = BINS_PER_DECADE * DECADES
CONFIDENCE_BINS = 10
#: The Telemetry payload allows 64 error kinds; the rest are counted under this key.
OTHER_ERRORS = "other"
MAX_ERROR_KINDS = 63
#: The Telemetry payload allows 1000 class keys: the 1000 most frequent are sent.
MAX_CLASS_KEYS = 1000


class LatencyHistogram:
    """Counts of latencies (ms) in log-spaced bins; exact count, sum and max."""

    def __init__(self) -> None:
        self.counts = [0] * (N_BINS + 2)  # [underflow, bins..., overflow]
        self.count = 0
        self.max = 0.0
        self.min = math.inf

    def record(self, ms: float) -> None:
        if ms <= LOW_MS:
            index = 0
        else:
            index = min(int(math.log10(ms / LOW_MS) * BINS_PER_DECADE) + 1, N_BINS + 1)
        self.counts[index] += 1
        self.count += 1
        if ms > self.max:
            self.max = ms
        if ms < self.min:
            self.min = ms

    def percentile(self, q: float) -> float:
        """The nearest-rank ``q``-quantile (0 < q <= 1), as the geometric centre of its bin."""
        if self.count == 0:
            raise ValueError("empty histogram")
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                if index == N_BINS + 1:  # the overflow bin has no upper edge
                    return self.max
                return min(max(_bin_centre(index), self.min), self.max)
        return self.max

    def summary(self) -> LatencySummary | None:
        if self.count == 0:
            return None
        return LatencySummary(
            p50=self.percentile(0.50),
            p95=self.percentile(0.95),
            p99=self.percentile(0.99),
            max=self.max,
        )


def _bin_centre(index: int) -> float:
    if index == 0:
        return LOW_MS
    return LOW_MS * 10 ** ((index - 0.5) / BINS_PER_DECADE)


@dataclass
class GaugeContext:
    """What gauge functions read: the data dir and the previous CPU sample."""

    data_dir: Path
    last_cpu: tuple[float, float] = field(default_factory=lambda: _cpu_sample())


@dataclass(frozen=True)
class SystemGauge:
    """One host gauge: its key in ``Telemetry.system`` and how to read it (None: not here)."""

    key: str
    value: Callable[[GaugeContext], float | None]


def _cpu_sample() -> tuple[float, float]:
    t = os.times()
    return t.user + t.system, time.monotonic()


def _cpu_percent(ctx: GaugeContext) -> float | None:
    cpu, wall = _cpu_sample()
    last_cpu, last_wall = ctx.last_cpu
    ctx.last_cpu = (cpu, wall)
    if wall <= last_wall:
        return None
    return round(100.0 * (cpu - last_cpu) / (wall - last_wall), 2)


def _rss_mb(ctx: GaugeContext) -> float | None:
    return rss_mb()


def _disk_free_mb(ctx: GaugeContext) -> float | None:
    try:
        return round(shutil.disk_usage(ctx.data_dir).free / 2**20, 1)
    except OSError:
        return None


def _soc_temp_c(ctx: GaugeContext) -> float | None:
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000.0
    except (OSError, ValueError):
        return None


SYSTEM_GAUGES: tuple[SystemGauge, ...] = (
    SystemGauge("cpu_percent", _cpu_percent),
    SystemGauge("rss_mb", _rss_mb),
    SystemGauge("disk_free_mb", _disk_free_mb),
    SystemGauge("soc_temp_c", _soc_temp_c),
)


def read_gauges(ctx: GaugeContext) -> dict[str, float]:
    values = {}
    for gauge in SYSTEM_GAUGES:
        value = gauge.value(ctx)
        if value is not None:
            values[gauge.key] = value
    return values


@dataclass
class _Window:
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    inference_count: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    confidence: list[int] = field(default_factory=lambda: [0] * CONFIDENCE_BINS)
    classes: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


@dataclass
class Totals:
    """Counters since start (never reset): what ``/metrics`` exposes."""

    inferences: int = 0
    latency_ms_sum: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    dropped: int = 0


class TelemetryCollector:
    """Thread-safe counters for the current interval; :meth:`flush` closes the interval."""

    def __init__(self, *, device_id: str, data_dir: Path) -> None:
        self.device_id = device_id
        self._lock = threading.Lock()
        self._window = _Window()
        self._totals = Totals()
        self._gauges = GaugeContext(data_dir=data_dir)

    def totals(self) -> Totals:
        """A copy of the counters since start."""
        with self._lock:
            t = self._totals
            return Totals(t.inferences, t.latency_ms_sum, dict(t.errors), t.dropped)

    def record_inference(
        self, latency_ms: float, confidence: float | None = None, predicted: int | None = None
    ) -> None:
        """Count one inference; ``predicted``: its top-1 class index (classifiers)."""
        with self._lock:
            self._totals.inferences += 1
            self._totals.latency_ms_sum += latency_ms
            w = self._window
            w.inference_count += 1
            w.latency.record(latency_ms)
            if confidence is not None and confidence == confidence:  # skip NaN
                index = min(max(int(confidence * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)
                w.confidence[index] += 1
            if predicted is not None:
                w.classes[predicted] = w.classes.get(predicted, 0) + 1

    def record_error(self, kind: str) -> None:
        with self._lock:
            totals = self._totals.errors
            if kind in totals or len(totals) < MAX_ERROR_KINDS:
                totals[kind] = totals.get(kind, 0) + 1
            else:
                totals[OTHER_ERRORS] = totals.get(OTHER_ERRORS, 0) + 1
            errors = self._window.errors
            if kind not in errors and len(errors) >= MAX_ERROR_KINDS:
                kind = OTHER_ERRORS
            errors[kind] = errors.get(kind, 0) + 1

    def record_dropped(self, n: int = 1) -> None:
        with self._lock:
            self._window.dropped += n
            self._totals.dropped += n

    def flush(
        self,
        *,
        seq: int,
        model: ModelRef | None,
        classifier: bool,
        inputs: InputStats | None = None,
        labels: Sequence[str] = (),
        shadow: ShadowReport | None = None,
    ) -> Telemetry:
        """Summarise and reset the current interval (``inputs``: its input statistics;
        ``labels``: the model's, naming the class counts, else the index as a string)."""
        with self._lock:
            w, self._window = self._window, _Window()
        interval = max(time.monotonic() - w.started, 1e-3)
        return Telemetry(
            device_id=self.device_id,
            seq=seq,
            interval_s=min(interval, 86_400.0),
            model=model,
            inference_count=w.inference_count,
            error_count=sum(w.errors.values()),
            errors=w.errors,
            latency_ms=w.latency.summary(),
            dropped=w.dropped,
            system=read_gauges(self._gauges),
            confidence_histogram=w.confidence if classifier else [],
            inputs=inputs,
            class_counts=_class_counts(w.classes, labels) if classifier else {},
            shadow=shadow,
        )


def _class_counts(counts: dict[int, int], labels: Sequence[str]) -> dict[str, int]:
    """Counts by class index as counts by label (the index as a string past the labels)."""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:MAX_CLASS_KEYS]
    return {(labels[i] if 0 <= i < len(labels) else str(i))[:128]: n for i, n in top}
