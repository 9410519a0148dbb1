"""Reference statistics: bin edges never on a value of discrete data (pixels, counts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from converters.stats import (
    HISTOGRAM_BINS,
    MAX_DISTINCT,
    bin_edges,
    reference_stats,
    streaming_reference_stats,
)


def test_edges_of_discrete_data_fall_between_its_values() -> None:
    values = np.arange(17.0)  # the digits' 0..16: equal edges would be every value
    data = np.tile(values, 40).reshape(-1, 4)
    ref = reference_stats(data, layout="flat", predicted=None, n_classes=None)
    edges = np.asarray(ref.histogram_edges)
    gaps = np.abs(edges[:, None] - values[None, :]).min(axis=1)
    assert gaps.min() >= 0.5 - 1e-9, edges  # half a step from the nearest value
    assert edges[0] < values.min() and edges[-1] > values.max()
    assert sum(ref.channel_histograms[0]) == 170  # every value counted


def test_a_float_rounding_on_the_device_keeps_each_value_in_its_bin() -> None:
    """What the capture e2e test found: the raw 0..16 features sat exactly on the edges and
    their 8-bit round trip (2.9999999 for 3.0) landed one bin lower — PSI 3.25 on an undrifted
    channel."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 17, (500, 8)).astype(np.float64)
    ref = reference_stats(data, layout="flat", predicted=None, n_classes=None)
    edges = np.asarray(ref.histogram_edges)
    for jitter in (-1e-5, 1e-5):
        moved = np.searchsorted(edges[1:-1], data + jitter, side="right")
        assert (moved == np.searchsorted(edges[1:-1], data, side="right")).all()


def test_fewer_values_than_bins_give_fewer_bins_and_continuous_data_equal_bins() -> None:
    few = reference_stats(
        np.array([[0.0], [1.0], [1.0]]), layout=None, predicted=None, n_classes=None
    )
    assert few.histogram_edges == [-0.5, 0.5, 1.5]
    assert few.channel_histograms == [[1, 2]]
    smooth = np.random.default_rng(1).random((MAX_DISTINCT + 10, 1))
    ref = reference_stats(smooth, layout=None, predicted=None, n_classes=None)
    assert len(ref.histogram_edges) == HISTOGRAM_BINS + 1
    assert ref.histogram_edges[0] == smooth.min() and ref.histogram_edges[-1] == smooth.max()
    assert bin_edges(2.0, 2.0, None).tolist() == np.linspace(2.0, 3.0, HISTOGRAM_BINS + 1).tolist()


def test_streaming_gives_the_same_edges_and_counts_as_in_memory() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (96, 3, 4, 4)).astype(np.float32) / 255.0

    def batches() -> Iterator[dict[str, Any]]:
        for i in range(0, 96, 32):
            yield {"x": pixels[i : i + 32]}

    whole = reference_stats(pixels, layout="nchw", predicted=None, n_classes=None)
    streamed = streaming_reference_stats(batches, layout="nchw", predict=None, n_classes=None)
    assert streamed.histogram_edges == whole.histogram_edges
    assert streamed.channel_histograms == whole.channel_histograms


def test_discrete_data_is_read_once_and_continuous_twice_with_the_same_figures() -> None:
    """Pixels get their histograms from the first pass's value counts (one read of the
    calibration set); continuous data needs a second pass over the final edges."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (64, 3, 5, 5)).astype(np.float32) / 255.0
    smooth = rng.standard_normal((64, 3, 5, 5)).astype(np.float32)
    for data, passes in ((pixels, 1), (smooth, 2)):
        reads = 0

        def batches(data: Any = data) -> Iterator[dict[str, Any]]:
            nonlocal reads
            reads += 1
            for i in range(0, 64, 24):
                yield {"x": data[i : i + 24]}

        whole = reference_stats(data, layout="nchw", predicted=None, n_classes=None)
        streamed = streaming_reference_stats(batches, layout="nchw", predict=None, n_classes=None)
        assert reads == passes
        assert streamed.samples == whole.samples == 64
        assert streamed.histogram_edges == whole.histogram_edges
        assert streamed.channel_histograms == whole.channel_histograms
        assert np.allclose(streamed.channel_mean, whole.channel_mean, rtol=1e-12, atol=1e-15)
        assert np.allclose(streamed.channel_std, whole.channel_std, rtol=1e-9, atol=1e-12)
    # Predicted classes still need the second pass (the model runs on every row).
    reads = 0

    def again() -> Iterator[dict[str, Any]]:
        nonlocal reads
        reads += 1
        yield {"x": pixels}

    counted = streaming_reference_stats(
        again, layout="nchw", predict=lambda _f: np.zeros(64, np.int64), n_classes=2
    )
    assert reads == 2 and counted.output_distribution == [1.0, 0.0]
