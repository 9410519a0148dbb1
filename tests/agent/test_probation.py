"""HealthMonitor verdicts: each rule on its own, and what counts toward a trial."""

from __future__ import annotations

import time

import pytest

from agent.config_types import convert
from agent.probation import HealthMonitor, ProbationConfig, p95
from edgefleet.contract import ModelRef

OLD = ModelRef(name="m", version="1.0.0")
NEW = ModelRef(name="m", version="2.0.0")


def _monitor(**overrides: object) -> HealthMonitor:
    config = convert(
        {"inferences": 10, "min_latency_samples": 5, "latency_floor_ms": 0.0, **overrides},
        ProbationConfig,
    )
    monitor = HealthMonitor(config)
    for _ in range(20):
        monitor.record(OLD, latency_ms=10.0, finite=True, confidence=0.9)
    monitor.begin(NEW)
    return monitor


def _feed(monitor: HealthMonitor, n: int, *, latency: float = 10.0, conf: float = 0.9) -> None:
    for _ in range(n):
        monitor.record(NEW, latency_ms=latency, finite=True, confidence=conf)


def test_healthy_model_passes_after_enough_inferences() -> None:
    monitor = _monitor()
    _feed(monitor, 9)
    assert monitor.verdict() is None
    monitor.record(OLD, latency_ms=500.0, finite=False, confidence=0.0)  # in flight: ignored
    _feed(monitor, 1, latency=19.0)
    assert monitor.verdict() == (True, "healthy over 10 inferences")


def _errors(monitor: HealthMonitor, n: int, *, then: int) -> None:
    for _ in range(n):
        monitor.record_error(NEW)
    _feed(monitor, then)


@pytest.mark.parametrize(
    ("feed", "reason"),
    [
        (lambda m: m.record(NEW, latency_ms=1, finite=False, confidence=None), "NaN or Inf"),
        (lambda m: _feed(m, 10, latency=25.0), "latency p95 25.000 ms vs 10.000 ms"),
        (lambda m: _feed(m, 10, conf=0.1), "confidence collapsed"),
        (lambda m: _errors(m, 3, then=7), "error rate 30%"),
    ],
)
def test_each_rule_fails_a_model(feed: object, reason: str) -> None:
    monitor = _monitor()
    feed(monitor)  # type: ignore[operator]
    verdict = monitor.verdict()
    assert verdict is not None and not verdict[0] and reason in verdict[1], verdict


def test_no_traffic_passes_at_max_s_and_the_floor_protects_fast_models() -> None:
    monitor = _monitor(max_s=0.01, inferences=1000)
    monitor.begin(NEW)
    while (verdict := monitor.verdict()) is None:
        time.sleep(0.001)
    assert verdict == (True, "healthy over 0 inferences")
    fast = _monitor(latency_floor_ms=15.0)
    _feed(fast, 10, latency=25.0)  # 2.5× of 10 ms but under 2 × the 15 ms floor
    assert fast.verdict() == (True, "healthy over 10 inferences")


def test_a_committed_model_becomes_the_baseline() -> None:
    monitor = _monitor()
    _feed(monitor, 10, latency=15.0)
    monitor.end(committed=True)
    monitor.begin(OLD)
    for _ in range(10):
        monitor.record(OLD, latency_ms=31.0, finite=True, confidence=0.9)
    verdict = monitor.verdict()
    assert verdict is not None and "vs 15.000 ms" in verdict[1]
    assert p95([1.0, 2.0, 3.0]) == 3.0 and p95([float(i) for i in range(1, 101)]) == 95.0
