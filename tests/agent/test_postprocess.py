"""Postprocessing by task on real (tiny) ONNX models: top-k, YOLO/SSD boxes + NMS back in
source pixels through the letterbox, segmentation masks, raw tensors."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.engine import BackendOptions, load_model
from agent.errors import ModelLoadError
from agent.inputs import InputItem
from agent.pipeline import prepare
from agent.plugin_config import DetectionPostConfig, RawPostConfig, SegmentationPostConfig
from agent.postprocess import POSTPROCESSORS
from agent.state import Serving
from edgefleet.contract import Preprocessing, TensorSpec
from edgefleet.contract.manifest import ResizeSpec
from tests.agent.factory import write_artifact
from tests.agent.media import sample_photo
from tests.agent.onnx_models import bright_segmenter, ssd_model, yolo_model
from tests.utils.artifacts import digits_images

SIZE = 320
LABELS = ["person", "car", "dog"]
#: Boxes in china.jpg pixels (640×427): two overlapping "person", one "car" over them, one weak.
SOURCE_BOXES = np.array(
    [[100, 100, 300, 200], [110, 105, 305, 210], [120, 110, 290, 190], [400, 50, 600, 400]],
    np.float32,
)
CLASSES = [0, 0, 1, 2]
SCORES = [0.9, 0.8, 0.7, 0.1]


def _to_model(boxes: np.ndarray) -> np.ndarray:
    """Source pixels → model-input pixels through a 320×320 letterbox (computed here)."""
    w, h = 640, 427
    scale = min(SIZE / w, SIZE / h)
    rw, rh = round(w * scale), round(h * scale)
    px, py = (SIZE - rw) // 2, (SIZE - rh) // 2
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]] * (rw / w) + px
    out[:, [1, 3]] = out[:, [1, 3]] * (rh / h) + py
    return out


def _detector(tmp_path: Path, model: bytes, outputs: list[TensorSpec]) -> Serving:
    art = write_artifact(
        tmp_path / "det",
        model_bytes=model,
        fmt="onnx",
        inputs=[TensorSpec(name="images", shape=[1, 3, SIZE, SIZE], dtype="float32")],
        outputs=outputs,
        preprocessing=Preprocessing(resize=ResizeSpec(width=SIZE, height=SIZE, mode="letterbox")),
        task="detection",
        labels=LABELS,
    )
    return Serving.of(load_model(art, options=BackendOptions()))


def _detect(serving: Serving) -> list[dict[str, object]]:
    job = prepare(InputItem("china.jpg", sample_photo().read_bytes()), serving)
    outputs = serving.model.infer({"images": job.tensor})
    [result] = serving.results(outputs, [job.geometry])
    detections = result["detections"]
    assert isinstance(detections, list)
    return detections


def _check(detections: list[dict[str, object]]) -> None:
    # NMS drops the second "person" (same class, IoU > 0.45) but keeps the "car" over it;
    # the 0.1 "dog" is under the score threshold. Boxes come back in source pixels.
    assert [(d["label"], d["score"]) for d in detections] == [("person", 0.9), ("car", 0.7)]
    for d, expected in zip(detections, SOURCE_BOXES[[0, 2]], strict=True):
        np.testing.assert_allclose(np.asarray(d["box"], np.float32), expected, atol=1.0)


def test_yolov8_boxes_nms_and_letterbox_undone(tmp_path: Path) -> None:
    cxcywh = _to_model(SOURCE_BOXES)
    cxcywh = np.concatenate([(cxcywh[:, :2] + cxcywh[:, 2:]) / 2, cxcywh[:, 2:] - cxcywh[:, :2]], 1)
    scores = np.zeros((4, 3), np.float32)
    scores[np.arange(4), CLASSES] = SCORES
    pred = np.concatenate([cxcywh, scores], axis=1).T[np.newaxis]  # [1, 4+C, N]
    out = [TensorSpec(name="output0", shape=[1, 7, 4], dtype="float32")]
    serving = _detector(tmp_path, yolo_model(pred, SIZE), out)
    assert serving.postprocess.style == "yolov8"  # type: ignore[attr-defined]
    _check(_detect(serving))


def test_yolov5_objectness_is_multiplied_in(tmp_path: Path) -> None:
    xyxy = _to_model(SOURCE_BOXES)
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    objectness = np.array([[0.95], [0.9], [0.875], [0.5]], np.float32)
    classes = np.zeros((4, 3), np.float32)
    classes[np.arange(4), CLASSES] = np.array(SCORES) / objectness[:, 0]
    pred = np.concatenate([cxcywh, objectness, classes], axis=1)[np.newaxis]  # [1, N, 5+C]
    out = [TensorSpec(name="output0", shape=[1, 4, 8], dtype="float32")]
    serving = _detector(tmp_path, yolo_model(pred, SIZE), out)
    assert serving.postprocess.style == "yolov5"  # type: ignore[attr-defined]
    _check(_detect(serving))


def test_ssd_normalised_yxyx_boxes_with_background_class(tmp_path: Path) -> None:
    xyxy = _to_model(SOURCE_BOXES) / SIZE
    boxes = xyxy[:, [1, 0, 3, 2]][np.newaxis]
    scores = np.zeros((1, 4, 4), np.float32)
    scores[0, np.arange(4), np.array(CLASSES) + 1] = SCORES
    scores[0, :, 0] = 0.05  # background
    out = [
        TensorSpec(name="boxes", shape=[1, 4, 4], dtype="float32"),
        TensorSpec(name="scores", shape=[1, 4, 4], dtype="float32"),
    ]
    serving = _detector(tmp_path, ssd_model(boxes, scores, SIZE), out)
    assert serving.postprocess.style == "ssd"  # type: ignore[attr-defined]
    _check(_detect(serving))


def test_detection_that_cannot_fit_the_outputs_fails_at_load(tmp_path: Path) -> None:
    pred = np.zeros((1, 9, 4), np.float32)  # 9 features fit neither 4+3 nor 5+3
    out = [TensorSpec(name="output0", shape=[1, 9, 4], dtype="float32")]
    with pytest.raises(ModelLoadError, match="fits neither"):
        _detector(tmp_path, yolo_model(pred, SIZE), out)


def test_segmentation_mask_back_in_source_geometry(tmp_path: Path) -> None:
    art = write_artifact(
        tmp_path / "seg",
        model_bytes=bright_segmenter(64, 64),
        fmt="onnx",
        inputs=[TensorSpec(name="images", shape=[1, 1, 64, 64], dtype="float32")],
        outputs=[TensorSpec(name="logits", shape=[1, 2, 64, 64], dtype="float32")],
        preprocessing=Preprocessing(
            color="gray", resize=ResizeSpec(width=64, height=64, mode="letterbox", pad_value=0)
        ),
        task="segmentation",
        labels=["dark", "bright"],
    )
    model = load_model(art, options=BackendOptions())
    serving = Serving.of(model, SegmentationPostConfig(include_mask=True))
    image = np.zeros((100, 200), np.uint8)
    image[:, :50] = 255  # the left quarter is bright
    ok, png = cv2.imencode(".png", image)
    assert ok
    job = prepare(InputItem("quarter.png", png.tobytes()), serving)
    [result] = serving.results(model.infer({"images": job.tensor}), [job.geometry])
    assert result["mask_shape"] == [100, 200]
    assert result["classes"] == pytest.approx({"dark": 0.75, "bright": 0.25}, abs=0.02)
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(result["mask_png"]), np.uint8), 0)
    assert mask is not None
    assert mask.shape == (100, 200)
    assert (mask[:, :45] == 1).all() and (mask[:, 56:] == 0).all()


def test_classification_top_k_and_raw(digits_v1: Path, tmp_path: Path) -> None:
    model = load_model(digits_v1, options=BackendOptions())
    [image] = digits_images(tmp_path, 1)
    label = int(image.stem[-1])
    serving = Serving.of(model)
    job = prepare(InputItem(image.name, image.read_bytes()), serving)
    outputs = model.infer({"input": job.tensor})
    [result] = serving.results(outputs, [job.geometry])
    top = result["top_k"]
    assert len(top) == 5 and top[0]["label"] == str(label)
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    raw = Serving.of(model, RawPostConfig(max_values=5))
    [result] = raw.results(outputs, [job.geometry])
    assert result["outputs"]["label"] == label
    assert result["outputs"]["probabilities"] == {"shape": [10], "dtype": "float32"}


def test_registry_covers_every_task() -> None:
    assert set(POSTPROCESSORS) == {"classification", "detection", "segmentation", "raw"}
    DetectionPostConfig(style="ssd")  # the typed config of each plugin
