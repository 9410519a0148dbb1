"""The postprocessor plugin boundary: model outputs → one JSON-able result per batch row.

A postprocessor is built once per served model (its output names and shapes are checked then,
so a model that does not fit fails to load), and called with real-valued outputs (quantized
tensors already dequantized) and where each row's image came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent.preprocess import letterbox_geometry
from edgefleet.contract import Manifest
from edgefleet.contract.manifest import ResizeSpec


@dataclass(frozen=True)
class Geometry:
    """Maps model-input pixel coordinates back to the source image."""

    source: tuple[int, int] | None  # (width, height) of the decoded image; None for tensors
    resize: ResizeSpec | None

    def to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes [N, 4] (x1, y1, x2, y2) in model-input pixels → source pixels, clipped."""
        if self.source is None or self.resize is None:
            return xyxy
        w, h = self.source
        r = self.resize
        out = xyxy.astype(np.float32, copy=True)
        if r.mode == "letterbox":
            box = letterbox_geometry(w, h, r.width, r.height)
            sx, sy = box.width / w, box.height / h
            out[:, [0, 2]] = (out[:, [0, 2]] - box.pad_x) / sx
            out[:, [1, 3]] = (out[:, [1, 3]] - box.pad_y) / sy
        else:
            out[:, [0, 2]] *= w / r.width
            out[:, [1, 3]] *= h / r.height
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
        return out


class Postprocessor(Protocol):
    def __call__(
        self, outputs: dict[str, np.ndarray], geometry: list[Geometry]
    ) -> list[dict[str, Any]]:
        """One result per batch row (``len(geometry)`` rows)."""
        ...


def label_of(manifest: Manifest, index: int) -> str:
    labels = manifest.labels
    return labels[index] if 0 <= index < len(labels) else str(index)


def input_size(manifest: Manifest) -> tuple[int, int] | None:
    """(width, height) of the model input image, from the resize spec."""
    spec = manifest.preprocessing
    if spec is None or spec.resize is None:
        return None
    return spec.resize.width, spec.resize.height
