"""``detection``: SSD- or YOLO-style outputs → boxes, class-aware NMS (cv2.dnn), source pixels.

- ``ssd``: boxes ``[B, N, 4]`` normalised corners + scores ``[B, N, C]`` (a leading
  background column is dropped when there is one more class than labels);
- ``yolov8``: one output ``[B, 4 + C, N]`` (or ``[B, N, 4 + C]``), boxes ``cx, cy, w, h`` in
  model-input pixels, class scores;
- ``yolov5``: one output ``[B, N, 5 + C]`` with an objectness column multiplied in.

Boxes are mapped back through the letterbox (or stretch) to the source image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.errors import ModelLoadError
from agent.plugin_config import DetectionPostConfig
from agent.postprocess.base import Geometry, input_size, label_of
from agent.preprocess import load_cv2
from edgefleet.contract import Manifest, TensorSpec


def _dims(spec: TensorSpec) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in spec.shape]


class Detection:
    def __init__(self, config: DetectionPostConfig, manifest: Manifest) -> None:
        self.config = config
        self.manifest = manifest
        self.size = input_size(manifest)
        outputs = [s for s in manifest.outputs if len(s.shape) == 3]
        n = len(manifest.labels)
        ref = manifest.ref
        style: str = config.style
        boxes = [s for s in outputs if _dims(s)[2] == 4]
        if len(boxes) > 1:  # scores of 3 classes + background are [B, N, 4] too: ask the name
            boxes.sort(key=lambda s: "box" not in s.name.lower())
        if style == "auto":
            style = "ssd" if len(outputs) == 2 and boxes else "yolo?"
        if style == "ssd":
            scores = [s for s in outputs if s not in boxes[:1]]
            if not boxes or not scores:
                raise ModelLoadError(f"{ref}: ssd detection needs boxes [B,N,4] + scores [B,N,C]")
            self.boxes, self.scores = boxes[0].name, scores[0].name
            self.style = "ssd"
            return
        if len(outputs) != 1:
            raise ModelLoadError(f"{ref}: yolo detection needs one [B, F, N] output")
        self.output = outputs[0].name
        _, a, b = _dims(outputs[0])
        if style == "yolo?":
            if not n:
                raise ModelLoadError(f"{ref}: set postprocess.style (no labels to infer it from)")
            if 4 + n in (a, b):
                style = "yolov8"
            elif 5 + n in (a, b):
                style = "yolov5"
            else:
                raise ModelLoadError(
                    f"{ref}: output {outputs[0].shape} fits neither 4+{n} nor 5+{n} features"
                )
        self.style = style
        features = (4 if style == "yolov8" else 5) + n if n else None
        # [B, F, N] when the feature count sits in the middle (YOLOv8 export layout).
        self.transposed = features is not None and a == features and b != features
        if features is None:
            self.transposed = a is not None and b is not None and a < b

    def __call__(
        self, outputs: dict[str, np.ndarray], geometry: list[Geometry]
    ) -> list[dict[str, Any]]:
        return [self._row(outputs, r, g) for r, g in enumerate(geometry)]

    def _decode(self, outputs: dict[str, np.ndarray], r: int) -> tuple[np.ndarray, ...]:
        """(xyxy boxes in model-input pixels, scores, class ids) of row ``r``."""
        if self.style == "ssd":
            boxes = outputs[self.boxes][r].astype(np.float32)
            scores = outputs[self.scores][r].astype(np.float32)
            if scores.shape[1] == len(self.manifest.labels) + 1:
                scores = scores[:, 1:]
            if self.config.ssd_box_order == "yxyx":
                boxes = boxes[:, [1, 0, 3, 2]]
            w, h = self.size or (1, 1)
            boxes = boxes * np.array([w, h, w, h], np.float32)
        else:
            pred = outputs[self.output][r].astype(np.float32)
            if self.transposed:
                pred = pred.T
            scores = pred[:, 4:] if self.style == "yolov8" else pred[:, 5:] * pred[:, 4:5]
            cx, cy, bw, bh = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
            boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        classes = scores.argmax(axis=1)
        best = scores[np.arange(len(classes)), classes]
        return boxes, best, classes

    def _row(self, outputs: dict[str, np.ndarray], r: int, geometry: Geometry) -> dict[str, Any]:
        boxes, scores, classes = self._decode(outputs, r)
        keep = scores >= self.config.score_threshold
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        if len(scores):
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
            picked = load_cv2().dnn.NMSBoxesBatched(
                xywh.tolist(),
                scores.tolist(),
                classes.astype(np.int32).tolist(),
                self.config.score_threshold,
                self.config.iou_threshold,
                top_k=self.config.max_detections,
            )
            index = np.asarray(picked, dtype=np.int64).reshape(-1)[: self.config.max_detections]
            boxes, scores, classes = boxes[index], scores[index], classes[index]
        boxes = geometry.to_source(boxes)
        return {
            "detections": [
                {
                    "class": int(c),
                    "label": label_of(self.manifest, int(c)),
                    "score": round(float(s), 6),
                    "box": [round(float(v), 2) for v in b],
                }
                for b, s, c in zip(boxes, scores, classes, strict=True)
            ]
        }
