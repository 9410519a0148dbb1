"""edgefleet.decode: each layout's decoder on hand-made outputs with known boxes, NMS, masks,
and outputs that do not fit their layout."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.contract.postprocess import (
    AnchorGrid,
    GflPost,
    MaskPost,
    SsdAnchorsPost,
    SsdPost,
    YoloV5Post,
    YoloV8Post,
    YoloXPost,
)
from edgefleet.decode import Boxes, DecodeError, candidates, class_map, detect, input_size, nms


def test_yolox_grid_and_strides() -> None:
    # 64x64 input, strides 8/16/32: 64 + 16 + 4 cells.
    pred = np.zeros((1, 84, 6), np.float32)
    cell = 2 * 8 + 3  # stride 8, row 2, column 3
    pred[0, cell] = [0.5, 0.5, np.log(2), np.log(2), 0.9, 0.8]
    post = YoloXPost(output="o")
    found = detect(post, {"o": pred}, 0, (64, 64))
    assert len(found) == 1
    np.testing.assert_allclose(found.xyxy[0], [20, 12, 36, 28], atol=1e-4)
    assert found.scores[0] == pytest.approx(0.72)
    with pytest.raises(DecodeError, match="make 84"):
        candidates(post, {"o": pred[:, :80]}, 0, (64, 64))


def test_gfl_distance_distributions() -> None:
    # One stride-8 head on a 16x16 input: 4 cells; reg_max 3 → 4 bins per side.
    logits = np.full((1, 4, 16), -50.0, np.float32)
    logits[0, :, 2::4] = 50.0  # every side at bin 2 → 2 x stride = 16 px
    scores = np.zeros((1, 4, 2), np.float32)
    scores[0, 0, 1] = 0.9
    post = GflPost(score_outputs=["s"], box_outputs=["b"], strides=[8], reg_max=3)
    found = detect(post, {"s": scores, "b": logits}, 0, (16, 16))
    assert len(found) == 1 and found.classes[0] == 1
    np.testing.assert_allclose(found.xyxy[0], [-12, -12, 20, 20], atol=1e-3)
    with pytest.raises(DecodeError, match="want"):
        candidates(post, {"s": scores, "b": logits[:, :, :12]}, 0, (16, 16))


def test_ssd_anchors_mediapipe_style() -> None:
    post = SsdAnchorsPost(
        boxes="r",
        scores="c",
        anchors=AnchorGrid(strides=[8, 16], per_cell=[2, 6]),
        box_scale=[128.0, 128.0, 128.0, 128.0],
        score_activation="sigmoid",
    )
    raw = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -10.0, np.float32)
    raw[0, 0, :4] = [12.8, 0.0, 64.0, 32.0]  # first anchor: cell (0, 0) of stride 8, centre 4
    logits[0, 0, 0] = 2.0
    raw[0, 512 + 6 * 9, :4] = [0, 0, 16, 16]  # stride 16, cell (row 1, column 1), centre 24
    logits[0, 512 + 6 * 9, 0] = 3.0
    found = detect(post, {"r": raw, "c": logits}, 0, (128, 128))
    assert len(found) == 2
    np.testing.assert_allclose(found.xyxy[0], [16, 16, 32, 32], atol=1e-4)
    np.testing.assert_allclose(found.xyxy[1], [-15.2, -12, 48.8, 20], atol=1e-4)
    assert found.scores[1] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_yolov8_yolov5_and_decoded_ssd() -> None:
    pred = np.zeros((1, 6, 3), np.float32)  # [B, 4 + 2, N]
    pred[0, :, 1] = [10, 10, 4, 4, 0.1, 0.7]
    found = detect(YoloV8Post(output="o"), {"o": pred}, 0, (32, 32))
    assert len(found) == 1 and found.classes[0] == 1
    np.testing.assert_allclose(found.xyxy[0], [8, 8, 12, 12])
    v5 = np.zeros((1, 2, 7), np.float32)
    v5[0, 0] = [10, 10, 4, 4, 0.5, 0.9, 0.2]  # 0.45 after objectness
    v5[0, 1] = [20, 20, 4, 4, 0.2, 0.9, 0.2]  # 0.18: below the threshold
    found = detect(YoloV5Post(output="o"), {"o": v5}, 0, (32, 32))
    assert len(found) == 1 and found.scores[0] == pytest.approx(0.45)
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6]]], np.float32)
    scores = np.array([[[0.05, 0.9]]], np.float32)
    post = SsdPost(boxes="b", scores="s", box_order="yxyx", background=True)
    found = detect(post, {"b": boxes, "s": scores}, 0, (100, 50))
    np.testing.assert_allclose(found.xyxy[0], [20, 5, 60, 25], atol=1e-4)
    assert found.classes[0] == 0


def test_nms_is_class_aware_and_capped() -> None:
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    boxes = Boxes(xyxy, np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.array([0, 0, 1, 0]))
    kept = nms(boxes, iou_threshold=0.5, max_detections=10)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert len(nms(boxes, iou_threshold=0.5, max_detections=2)) == 2
    empty = Boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert len(nms(empty, iou_threshold=0.5, max_detections=2)) == 0


def test_masks_threshold_one_channel_and_argmax_several() -> None:
    prob = np.array([[[[0.2], [0.7]], [[0.9], [0.1]]]], np.float32)  # [1, 2, 2, 1]
    mask = class_map(MaskPost(output="m", channels_last=True), {"m": prob}, 0)
    assert mask.tolist() == [[0, 1], [1, 0]]
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 2, 0, 1] = 5
    mask = class_map(MaskPost(output="m", channels_last=False), {"m": logits}, 0)
    assert mask.tolist() == [[0, 2], [0, 0]]
    with pytest.raises(DecodeError):
        class_map(MaskPost(output="m", channels_last=False), {"m": np.zeros((1, 4))}, 0)


def test_input_size_reads_nchw_and_nhwc() -> None:
    assert input_size([1, 3, 800, 608]) == (608, 800)
    assert input_size(["b", 128, 96, 3]) == (96, 128)
    assert input_size([1, 3, "h", "w"]) is None
    assert input_size([1, 64]) is None
