"""Validators on hand-made outputs: each failure mode must be caught, with its numbers."""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.options import ConvertOptions
from converters.stats import reference_stats
from converters.validators import (
    VALIDATORS,
    AccuracyValidator,
    FidelityValidator,
    ValidationContext,
    predicted_classes,
)

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]], np.float32)
LABEL = np.array([0, 1, 2, 0], dtype=np.int64)


def _ctx(
    onnx_out: dict[str, Any],
    ref_out: dict[str, Any],
    *,
    labels: Any = None,
    task: Any = "classification",
    reference_rows: int | None = None,
    **options: Any,
) -> ValidationContext:
    return ValidationContext(
        inputs={"x": np.zeros((len(PROBS), 2), np.float32)},
        onnx_outputs=onnx_out,
        reference_outputs=ref_out,
        output_specs=[],
        labels=labels,
        class_values=None,
        task=task,
        synthetic=labels is None,
        options=ConvertOptions(**options),
        reference_rows=reference_rows,
    )


def test_fidelity_passes_within_tolerance() -> None:
    result = FidelityValidator().check(
        _ctx(
            {"label": LABEL, "probabilities": PROBS},
            {"label": LABEL, "probabilities": PROBS + 1e-5},
        )
    )
    error = result.values["probabilities.max_abs_error"]
    assert result.passed and isinstance(error, float) and error < 2e-5
    assert result.values["label.agreement"] == 1.0


def test_fidelity_failures() -> None:
    shifted = PROBS.copy()
    shifted[0] = [0.1, 0.2, 0.7]
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"probabilities": PROBS}, {"probabilities": shifted}, "75.0% of rows within tolerance"),
        ({"label": LABEL}, {"label": np.array([0, 1, 2, 1])}, "label: equal on 75.0% of rows"),
        ({"label": LABEL}, {"other": LABEL}, "share no output name"),
        ({"label": LABEL}, {"label": np.zeros(5)}, "label has shape [4], source [5]"),
        ({"p": PROBS}, {"p": np.where(PROBS > 0.6, np.nan, PROBS)}, "rows within tolerance"),
    ]
    for got, want, message in cases:
        result = FidelityValidator().check(_ctx(got, want))
        assert not result.passed and message in result.message, result.message
    loose = FidelityValidator().check(
        _ctx({"probabilities": PROBS}, {"probabilities": shifted}, min_agreement=0.7)
    )
    assert loose.passed and loose.values["probabilities.argmax_agreement"] == 0.75


def test_fidelity_on_the_first_rows_when_the_source_ran_on_those_only() -> None:
    """A big input's source runs on the first rows (converters.evaldata.check_rows): those
    rows are compared, and a difference there still fails."""
    first = FidelityValidator().check(
        _ctx({"probabilities": PROBS}, {"probabilities": PROBS[:2]}, reference_rows=2)
    )
    assert first.passed and first.values["rows"] == 2, first.message
    shifted = PROBS[:2].copy()
    shifted[1] = [0.8, 0.1, 0.1]
    broken = FidelityValidator().check(
        _ctx({"probabilities": PROBS}, {"probabilities": shifted}, reference_rows=2)
    )
    assert not broken.passed and "50.0% of rows within tolerance" in broken.message
    whole = FidelityValidator().check(_ctx({"probabilities": PROBS}, {"probabilities": PROBS[:2]}))
    assert not whole.passed and "source [2, 3]" in whole.message


def test_fidelity_of_a_map_is_its_tolerance_not_the_argmax_of_its_pixels() -> None:
    """A probability map saturated at 1.0 in many pixels: a difference far inside tolerance
    moves the flattened argmax on every row, and that is no fidelity problem."""
    want = np.zeros((4, 1, 8, 8), np.float32)
    want[:, 0, 2:6, 2:6] = 0.999
    got = want.copy()
    got[:, 0, 5, 5] += 1e-6  # the argmax moves from (2, 2) to (5, 5)
    result = FidelityValidator().check(_ctx({"map": got}, {"map": want}))
    assert result.passed, result.message
    assert "map.argmax_agreement" not in result.values
    far = got.copy()
    far[0, 0, 0, 0] = 0.5  # outside tolerance on one row in four
    broken = FidelityValidator().check(_ctx({"map": far}, {"map": want}))
    assert not broken.passed and "75.0% of rows within tolerance" in broken.message


def test_accuracy_against_labels_and_source() -> None:
    truth = np.array([0, 1, 2, 1])
    same = AccuracyValidator().check(_ctx({"label": LABEL}, {"label": LABEL}, labels=truth))
    assert same.passed and same.values["top1"] == 0.75 == same.values["source_top1"]
    worse = AccuracyValidator().check(
        _ctx({"label": np.array([0, 1, 0, 0])}, {"label": LABEL}, labels=truth)
    )
    assert not worse.passed and "top-1 fell from 0.7500 (source) to 0.5000" in worse.message
    skipped = AccuracyValidator().check(_ctx({"label": LABEL}, {"label": LABEL}, task="raw"))
    assert skipped.passed and skipped.skipped


def test_predicted_classes_prefers_label_then_scores() -> None:
    by_label = predicted_classes({"label": LABEL, "p": PROBS}, None)
    assert by_label is not None and by_label.tolist() == [0, 1, 2, 0]
    by_scores = predicted_classes({"p": PROBS}, np.array(["a", "b", "c"]))
    assert by_scores is not None and by_scores.tolist() == ["a", "b", "c", "a"]
    assert predicted_classes({"v": np.zeros((4, 1), np.float32)}, None) is None
    assert list(VALIDATORS) == ["fidelity", "top1"]


def test_reference_stats_layouts() -> None:
    rng = np.random.default_rng(0)
    nchw = rng.random((5, 3, 4, 4)).astype(np.float32)
    stats = reference_stats(nchw, layout="nchw", predicted=np.array([0, 1, 1, 2, 2]), n_classes=4)
    np.testing.assert_allclose(stats.channel_mean, nchw.mean(axis=(0, 2, 3)), rtol=1e-6)
    assert stats.output_distribution == [0.2, 0.4, 0.4, 0.0]
    nhwc = np.moveaxis(nchw, 1, -1)
    again = reference_stats(nhwc, layout="nhwc", predicted=None, n_classes=None)
    np.testing.assert_allclose(again.channel_std, stats.channel_std, rtol=1e-6)
    constant = reference_stats(np.ones((3, 2)), layout=None, predicted=None, n_classes=None)
    assert constant.histogram_edges[0] == 1.0 and constant.channel_histograms[0][0] == 3
