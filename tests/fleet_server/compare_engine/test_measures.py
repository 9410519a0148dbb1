"""The compare engine's measures on known inputs, the raw measure end to end on real ONNX
artifacts, and the require-compare thresholds on stored figures."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fleet_server.compare_engine import CompareError, compare_artifacts
from fleet_server.compare_engine.measures import cosine, f1, mask_iou, matched_boxes
from fleet_server.models.comparisons import ModelComparison
from fleet_server.services.quality.metrics import Box
from fleet_server.services.rollouts.compare_check import regression, replaced_versions
from fleet_server.services.rollouts.spec import CompareRequirement
from tests.utils.artifacts import _digits, build_digits_artifact


def test_matched_box_f1_matches_same_class_boxes_at_iou_half() -> None:
    a = [Box("cat", 0, 0, 10, 10), Box("dog", 20, 20, 30, 30)]
    same = [Box("dog", 20, 20, 30, 30, 0.9), Box("cat", 0, 0, 10, 10, 0.8)]
    assert matched_boxes(a, same) == 2 and f1(2, 0, 0) == 1.0
    shifted = [Box("cat", 0, 0, 10, 16, 0.9)]  # IoU 10/16 = 0.625: a match
    wrong_class = [Box("dog", 0, 0, 10, 10, 0.9)]
    far = [Box("cat", 5, 5, 15, 15, 0.9)]  # IoU 25/175: no match
    assert matched_boxes(a, shifted) == 1
    assert matched_boxes(a, wrong_class) == 0 and matched_boxes(a, far) == 0
    # Two candidates for one box: only one matches; F1 of 1 TP, 1 FP, 1 FN.
    assert matched_boxes(a[:1], [a[0], a[0]]) == 1
    assert f1(1, 1, 1) == pytest.approx(0.5) and f1(0, 0, 0) == 1.0 and f1(0, 3, 0) == 0.0


def test_mask_iou_and_cosine() -> None:
    a = np.array([[0, 0], [1, 1]])
    assert mask_iou(a, a) == 1.0
    b = np.array([[0, 1], [1, 1]])  # class 0: 1/2, class 1: 2/3
    assert mask_iou(a, b) == pytest.approx((0.5 + 2 / 3) / 2)
    assert mask_iou(a, 1 - a) == 0.0
    assert cosine(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(0.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), np.ones(3)) == 0.0


def _as_raw(artifact: Path) -> Path:
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["task"] = "raw"
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    return artifact


def test_raw_measure_end_to_end_and_mismatched_versions(tmp_path: Path) -> None:
    x, _ = _digits()
    np.savez(tmp_path / "x.npz", x=x[1400:1450])
    a = _as_raw(build_digits_artifact(tmp_path / "a", version="1.0.0"))
    same = _as_raw(build_digits_artifact(tmp_path / "s", version="1.0.1"))
    broken = _as_raw(build_digits_artifact(tmp_path / "b", version="1.1.0", shuffled_labels=True))
    result = compare_artifacts(baseline=a, candidate=same, data=tmp_path / "x.npz", top=3)
    assert result["task"] == "raw" and result["agreement"] == pytest.approx(1.0)
    assert result["measures"]["max_abs_diff"] == 0.0 and result["disagreements"] == []
    assert result["labelled"] is None and result["samples"] == 50
    result = compare_artifacts(baseline=a, candidate=broken, data=tmp_path / "x.npz", top=3)
    assert result["agreement"] < 0.8 and result["measures"]["max_abs_diff"] > 0.5
    assert len(result["disagreements"]) == 3
    assert result["disagreements"][0]["score"] >= result["disagreements"][2]["score"]
    classifier = build_digits_artifact(tmp_path / "c", version="2.0.0")
    with pytest.raises(CompareError, match="different tasks"):
        compare_artifacts(baseline=a, candidate=classifier, data=tmp_path / "x.npz")
    with pytest.raises(CompareError, match="limit"):
        compare_artifacts(baseline=a, candidate=same, data=tmp_path / "x.npz", limit=0)


def _row(agreement: float, accuracy_delta: float | None, ratio: float) -> ModelComparison:
    return ModelComparison(
        id=7,
        model_name="m",
        candidate_version="2",
        baseline_version="1",
        created_by="t",
        agreement=agreement,
        accuracy_delta=accuracy_delta,
        latency_ratio=ratio,
        result={},
    )


def test_require_compare_thresholds() -> None:
    default = CompareRequirement()
    assert regression(_row(0.99, -0.01, 1.2), default) is None
    assert "agreement" in (regression(_row(0.90, 0.0, 1.0), default) or "")
    assert "accuracy drops 0.030" in (regression(_row(0.99, -0.03, 1.0), default) or "")
    assert "no labelled accuracy" in (regression(_row(0.99, None, 1.0), default) or "")
    unlabelled = CompareRequirement(max_accuracy_drop=None)
    assert regression(_row(0.99, None, 1.0), unlabelled) is None
    assert "latency ratio 1.60" in (regression(_row(1.0, 0.0, 1.6), default) or "")


def test_replaced_versions_are_the_targets_versions_else_the_parent() -> None:
    def row(**fields: Any) -> Any:  # only the attributes replaced_versions reads
        return SimpleNamespace(**fields)

    candidate = row(name="m", version="3", parent_version="2")
    devices = [
        row(desired_name="m", desired_version="1"),
        row(desired_name="m", desired_version="3"),
        row(desired_name="other", desired_version="9"),
        row(desired_name=None, desired_version=None),
    ]
    assert replaced_versions(candidate=candidate, targets=devices) == ["1"]
    assert replaced_versions(candidate=candidate, targets=devices[1:]) == ["2"]
    orphan = row(name="m", version="3", parent_version=None)
    assert replaced_versions(candidate=orphan, targets=devices[1:]) == []
