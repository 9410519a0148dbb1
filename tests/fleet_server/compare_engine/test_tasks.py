"""The detector and segmenter measures end to end: real ONNX models (fixed boxes, a threshold
segmenter) through the agent's engine and postprocessors, on an .npz of inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefleet.contract import Preprocessing, TensorSpec
from edgefleet.contract.manifest import ResizeSpec
from fleet_server.compare_engine import compare_artifacts
from tests.agent.factory import write_artifact
from tests.agent.onnx_models import _model, bright_segmenter, yolo_model

SIZE = 32


def _detector(out: Path, version: str, boxes: list[list[float]], classes: list[int]) -> Path:
    """A yolov8-layout detector that always finds ``boxes`` (x1, y1, x2, y2) of ``classes``."""
    xyxy = np.asarray(boxes, np.float32)
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    scores = np.zeros((len(boxes), 2), np.float32)
    scores[np.arange(len(boxes)), classes] = 0.9
    pred = np.concatenate([cxcywh, scores], axis=1).T[np.newaxis]  # [1, 4+C, N]
    return write_artifact(
        out / version,
        model_bytes=yolo_model(pred, SIZE),
        fmt="onnx",
        inputs=[TensorSpec(name="images", shape=[1, 3, SIZE, SIZE], dtype="float32")],
        outputs=[TensorSpec(name="output0", shape=list(pred.shape), dtype="float32")],
        preprocessing=Preprocessing(resize=ResizeSpec(width=SIZE, height=SIZE, mode="stretch")),
        task="detection",
        labels=["cat", "dog"],
        name="det",
        version=version,
    )


def test_detector_agreement_is_matched_box_f1(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((3, 3, SIZE, SIZE)))
    a = _detector(tmp_path, "1", [[2, 2, 12, 12], [16, 16, 30, 30]], [0, 1])
    same = _detector(tmp_path, "2", [[2, 2, 12, 13], [16, 16, 30, 30]], [0, 1])
    moved = _detector(tmp_path, "3", [[2, 2, 12, 12], [0, 16, 8, 30]], [0, 1])
    result = compare_artifacts(baseline=a, candidate=same, data=tmp_path / "x.npz")
    assert result["agreement"] == 1.0 and result["measures"]["boxes_a"] == 6
    result = compare_artifacts(baseline=a, candidate=moved, data=tmp_path / "x.npz")
    # One box of two matches per input: TP 1, FP 1, FN 1 → F1 0.5.
    assert result["agreement"] == pytest.approx(0.5) and result["labelled"] is None
    assert result["disagreements"][0]["baseline"] == "2 boxes"


def _dark_segmenter(side: int) -> bytes:
    """The bright segmenter with its two classes swapped: every pixel's class flips."""
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["images", "half"], ["bright"]),
            helper.make_node("Neg", ["bright"], ["dark"]),
            helper.make_node("Concat", ["bright", "dark"], ["logits"], axis=1),
        ],
        "dark_segmenter",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, side, side])],
        initializer=[half],
    )
    return _model(graph)


def test_segmenter_agreement_is_mean_mask_iou(tmp_path: Path) -> None:
    x = np.zeros((2, 1, 16, 16), np.float32)
    x[:, :, :, :4] = 1.0  # the left quarter is bright
    np.savez(tmp_path / "x.npz", x=x)
    made = {}
    for version, model in (("1", bright_segmenter(16, 16)), ("2", bright_segmenter(16, 16)),
                           ("3", _dark_segmenter(16))):  # fmt: skip
        made[version] = write_artifact(
            tmp_path / version,
            model_bytes=model,
            fmt="onnx",
            inputs=[TensorSpec(name="images", shape=[1, 1, 16, 16], dtype="float32")],
            outputs=[TensorSpec(name="logits", shape=[1, 2, 16, 16], dtype="float32")],
            preprocessing=Preprocessing(color="gray"),
            task="segmentation",
            labels=["dark", "bright"],
            name="seg",
            version=version,
        )
    result = compare_artifacts(baseline=made["1"], candidate=made["2"], data=tmp_path / "x.npz")
    assert result["agreement"] == 1.0 and result["measures"]["pixel_agreement"] == 1.0
    result = compare_artifacts(baseline=made["1"], candidate=made["3"], data=tmp_path / "x.npz")
    assert result["agreement"] == 0.0 and result["measures"]["pixel_agreement"] == 0.0
    assert len(result["disagreements"]) == 2
