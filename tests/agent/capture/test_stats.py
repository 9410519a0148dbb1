"""Input statistics on the manifest's reference bins, checked against plain numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.capture.stats import MAX_VALUES_PER_CHANNEL, InputStatsAccumulator, ReferenceBins
from agent.inputs import InputItem
from agent.pipeline import prepare
from edgefleet.contract.manifest import ReferenceStats
from tests.agent.capture.helpers import digit_pixels, serving, with_reference


def _ref(channels: int, bins: int = 8, low: float = 0.0, high: float = 1.0) -> ReferenceStats:
    counts = [[100] * bins for _ in range(channels)]
    counts[0][0] = 0  # one rare bin in channel 0
    return ReferenceStats(
        samples=100,
        channel_mean=[0.5] * channels,
        channel_std=[0.3] * channels,
        histogram_edges=np.linspace(low, high, bins + 1).tolist(),
        channel_histograms=counts,
    )


def test_histograms_means_and_stds_match_numpy_on_nchw_and_nhwc() -> None:
    rng = np.random.default_rng(0)
    ref = _ref(3)
    nhwc = rng.normal(0.5, 0.4, size=(1, 20, 30, 3)).astype(np.float32)  # some outside edges
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    got = []
    for tensor, layout in ((nhwc, "nhwc"), (nchw, "nchw")):
        bins = ReferenceBins.of(ref, layout=layout)
        assert isinstance(bins, ReferenceBins)
        values = bins.values(tensor)
        assert values is not None and values.shape == (600, 3)
        acc = InputStatsAccumulator()
        acc.add(bins, values, bins.bin_index(values), bins.score(values, bins.bin_index(values)))
        acc.add(bins, values, bins.bin_index(values), 0.0)
        stats = acc.flush()
        assert stats is not None and stats.samples == 2
        got.append(stats)
    flat = nhwc.reshape(-1, 3).astype(np.float64)
    edges = np.asarray(ref.histogram_edges)
    for c in range(3):
        clipped = np.clip(flat[:, c], edges[0], edges[-1])  # out-of-range in the end bins
        expected = np.histogram(clipped, bins=edges)[0] * 2
        assert got[0].channel_histograms[c] == expected.tolist()
        assert got[0].channel_mean[c] == pytest.approx(flat[:, c].mean(), abs=1e-6)
        assert got[0].channel_std[c] == pytest.approx(flat[:, c].std(), abs=1e-6)
    # The same values whichever the layout (sums in another order: equal to rounding).
    assert got[0].channel_histograms == got[1].channel_histograms
    assert got[0].channel_mean == pytest.approx(got[1].channel_mean, abs=1e-9)
    assert InputStatsAccumulator().flush() is None


def test_large_images_are_subsampled_per_channel() -> None:
    bins = ReferenceBins.of(_ref(3), layout="nchw")
    assert isinstance(bins, ReferenceBins)
    values = bins.values(np.zeros((1, 3, 224, 224), np.float32))
    assert values is not None
    assert MAX_VALUES_PER_CHANNEL <= values.shape[0] < 2 * MAX_VALUES_PER_CHANNEL


def test_outside_score_counts_rare_bins_and_values_outside_the_edges() -> None:
    bins = ReferenceBins.of(_ref(1, bins=4), layout=None)
    assert isinstance(bins, ReferenceBins)
    values = np.array([[0.1], [0.6], [1.5], [0.9]], np.float32)  # rare bin, ok, outside, ok
    assert bins.score(values, bins.bin_index(values)) == 0.5


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        (None, "input_stats_no_reference"),
        (ReferenceStats(samples=1), "input_stats_no_reference"),
        (_ref(65), "input_stats_too_wide"),
        (_ref(1, bins=300), "input_stats_too_wide"),
    ],
)
def test_no_usable_reference_is_a_reason_not_a_crash(
    ref: ReferenceStats | None, reason: str
) -> None:
    assert ReferenceBins.of(ref, layout=None) == reason


def test_digits_score_low_and_inverted_digits_high(digits_v1: Path, tmp_path: Path) -> None:
    model = serving(with_reference(digits_v1, tmp_path / "ref"))
    bins = ReferenceBins.of(model.model.manifest.reference_stats, layout="flat")
    assert isinstance(bins, ReferenceBins) and bins.channels == 64
    plain: list[float] = []
    inverted: list[float] = []
    for i in range(1400, 1440):
        for frame, out in ((digit_pixels(i), plain), (255 - digit_pixels(i), inverted)):
            tensor = prepare(InputItem(source="x", data=frame), model).tensor
            values = bins.values(tensor)
            assert values is not None
            out.append(bins.score(values, bins.bin_index(values)))
    assert max(plain) <= 0.05 and min(inverted) >= 0.2, (max(plain), min(inverted))
