"""``detection``: boxes decoded by :mod:`edgefleet.decode`, class-aware NMS, source pixels.

The layout comes from ``manifest.postprocess`` (recorded by the converter: yolov8, yolov5, yolox,
gfl multi-head, ssd, ssd-anchors), so an artifact needs no agent config. A manifest without it
falls back to guessing from the output shapes and the labels, as before:

- ``ssd``: boxes ``[B, N, 4]`` normalised corners + scores ``[B, N, C]`` (a leading
  background column is dropped when there is one more class than labels);
- ``yolov8``: one output ``[B, 4 + C, N]`` (or ``[B, N, 4 + C]``);
- ``yolov5``: one output ``[B, N, 5 + C]`` with an objectness column multiplied in.

An agent config that names a ``style`` overrides the manifest; its thresholds apply whenever
the config is given. Boxes are mapped back through the letterbox (or stretch) to the source.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from agent.errors import ModelLoadError
from agent.plugin_config import DetectionPostConfig
from agent.postprocess.base import Geometry, label_of
from edgefleet.contract import Manifest, TensorSpec
from edgefleet.contract.postprocess import (
    DetectorPost,
    MaskPost,
    SsdPost,
    YoloV5Post,
    YoloV8Post,
    layout_of,
)
from edgefleet.decode import DecodeError, Size, candidates, detect
from edgefleet.decode import input_size as tensor_size


def _dims(spec: TensorSpec) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in spec.shape]


def _guess(config: DetectionPostConfig, manifest: Manifest) -> DetectorPost:
    """The layout from output shapes and labels (manifests written before ``postprocess``)."""
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
        return SsdPost(
            boxes=boxes[0].name,
            scores=scores[0].name,
            box_order=config.ssd_box_order,
            background=bool(n) and _dims(scores[0])[2] == n + 1,
        )
    if len(outputs) != 1:
        raise ModelLoadError(f"{ref}: yolo detection needs one [B, F, N] output")
    name = outputs[0].name
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
    if style == "yolov5":
        return YoloV5Post(output=name)
    features = 4 + n if n else None
    # [B, F, N] when the feature count sits in the middle (YOLOv8 export layout).
    first = features is not None and a == features and b != features
    if features is None:
        first = a is not None and b is not None and a < b
    return YoloV8Post(output=name, features_first=first)


class Detection:
    def __init__(
        self, config: DetectionPostConfig, manifest: Manifest, *, explicit: bool = True
    ) -> None:
        self.manifest = manifest
        recorded = manifest.postprocess
        if recorded is not None and config.style == "auto" and not isinstance(recorded, MaskPost):
            post: DetectorPost = recorded
        else:
            post = _guess(config, manifest)
        if explicit or recorded is None:
            post = msgspec.structs.replace(
                post,
                score_threshold=config.score_threshold,
                iou_threshold=config.iou_threshold,
                max_detections=config.max_detections,
            )
        self.post = post
        self.style = layout_of(post)
        self.size = self._size(manifest)
        self._check()

    @staticmethod
    def _size(manifest: Manifest) -> Size:
        spec = manifest.preprocessing
        if spec is not None and spec.resize is not None:
            return spec.resize.width, spec.resize.height
        layout = spec.layout if spec is not None else None
        found = tensor_size(manifest.inputs[0].shape, layout)
        return found if found is not None else (1, 1)

    def _check(self) -> None:
        """Decode zeros of the declared shapes: a layout that cannot fit fails at load."""
        static: dict[str, list[int]] = {}
        for spec in self.manifest.outputs:
            dims = [d for d in spec.shape[1:] if isinstance(d, int)]
            if len(dims) != len(spec.shape) - 1:
                return  # dynamic outputs: checked on the first inference
            static[spec.name] = dims
        zeros = {name: np.zeros([1, *dims], np.float32) for name, dims in static.items()}
        try:
            candidates(self.post, zeros, 0, self.size)
        except (DecodeError, KeyError, IndexError) as err:
            raise ModelLoadError(f"{self.manifest.ref}: {self.style} detection: {err}") from err

    def __call__(
        self, outputs: dict[str, np.ndarray], geometry: list[Geometry]
    ) -> list[dict[str, Any]]:
        return [self._row(outputs, r, g) for r, g in enumerate(geometry)]

    def _row(self, outputs: dict[str, np.ndarray], r: int, geometry: Geometry) -> dict[str, Any]:
        found = detect(self.post, outputs, r, self.size)
        boxes = geometry.to_source(found.xyxy)
        return {
            "detections": [
                {
                    "class": int(c),
                    "label": label_of(self.manifest, int(c)),
                    "score": round(float(s), 6),
                    "box": [round(float(v), 2) for v in b],
                }
                for b, s, c in zip(boxes, found.scores, found.classes, strict=True)
            ]
        }
