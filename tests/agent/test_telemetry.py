from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.telemetry import (
    CONFIDENCE_BINS,
    SYSTEM_GAUGES,
    LatencyHistogram,
    TelemetryCollector,
)
from edgefleet.contract import Channel, ModelRef, Telemetry, decode, encode

#: Half a bin in log space at 50 bins per decade: 10**(1/100) - 1.
BIN_TOLERANCE = 10 ** (1 / 100) - 1 + 1e-9


@pytest.mark.parametrize(
    "samples",
    [
        np.random.default_rng(1).lognormal(mean=1.0, sigma=0.8, size=5000),
        np.random.default_rng(2).uniform(0.05, 400.0, size=1000),
        np.concatenate([np.full(90, 2.0), np.full(10, 50.0)]),
        np.array([3.7]),
    ],
)
def test_percentiles_match_numpy_within_one_bin(samples: np.ndarray) -> None:
    hist = LatencyHistogram()
    for value in samples:
        hist.record(float(value))
    for q in (0.5, 0.95, 0.99):
        exact = float(np.percentile(samples, q * 100, method="inverted_cdf"))
        got = hist.percentile(q)
        assert abs(got - exact) / exact <= BIN_TOLERANCE, (q, got, exact)
    assert hist.max == float(samples.max())
    assert len(hist.counts) < 500  # a fixed number of bins, not a list of samples


def test_extremes_are_clamped_to_the_range() -> None:
    hist = LatencyHistogram()
    for value in (0.0, 1e-6, 1e9):
        hist.record(value)
    assert hist.percentile(0.01) <= 1e-3  # below the first bin: reported as its bound
    assert hist.percentile(1.0) == 1e9
    summary = hist.summary()
    assert summary is not None and summary.max == 1e9


def test_empty_histogram_has_no_summary() -> None:
    assert LatencyHistogram().summary() is None
    with pytest.raises(ValueError):
        LatencyHistogram().percentile(0.5)


def test_collector_summarises_and_resets(tmp_path: Path) -> None:
    collector = TelemetryCollector(device_id="dev-1", data_dir=tmp_path)
    for i in range(100):
        collector.record_inference(1.0 + i / 100, confidence=i / 100)
    collector.record_inference(5.0, confidence=1.0)
    collector.record_error("corrupt_image")
    collector.record_error("corrupt_image")
    collector.record_error("inference")
    collector.record_dropped(3)
    ref = ModelRef(name="digits", version="1.0.0")
    payload = collector.flush(seq=7, model=ref, classifier=True)
    assert payload.seq == 7 and payload.model == ref
    assert payload.inference_count == 101
    assert payload.error_count == 3
    assert payload.errors == {"corrupt_image": 2, "inference": 1}
    assert payload.dropped == 3
    assert payload.latency_ms is not None and payload.latency_ms.max == 5.0
    assert len(payload.confidence_histogram) == CONFIDENCE_BINS
    assert payload.confidence_histogram == [10] * 9 + [11]
    assert decode(Channel.TELEMETRY, encode(payload), device_id="dev-1") == payload

    empty = collector.flush(seq=8, model=None, classifier=False)
    assert empty.inference_count == 0 and empty.latency_ms is None
    assert empty.errors == {} and empty.confidence_histogram == []


def test_error_kinds_are_capped_for_the_payload(tmp_path: Path) -> None:
    collector = TelemetryCollector(device_id="dev-1", data_dir=tmp_path)
    for i in range(100):
        collector.record_error(f"kind-{i}")
    payload = collector.flush(seq=1, model=None, classifier=False)
    assert len(payload.errors) == 64
    assert payload.errors["other"] == 37
    assert payload.error_count == 100
    Telemetry.model_validate(payload.model_dump())


def test_system_gauges(tmp_path: Path) -> None:
    assert {g.key for g in SYSTEM_GAUGES} >= {"cpu_percent", "rss_mb", "disk_free_mb"}
    collector = TelemetryCollector(device_id="dev-1", data_dir=tmp_path)
    sum(math.sqrt(i) for i in range(300_000))  # burn some CPU
    system = collector.flush(seq=1, model=None, classifier=False).system
    assert 10 < system["rss_mb"] < 4096
    assert system["disk_free_mb"] > 0
    assert system["cpu_percent"] >= 0
