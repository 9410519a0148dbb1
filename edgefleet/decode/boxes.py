"""Boxes and non-maximum suppression in numpy: no OpenCV, so the converter's fidelity measure
and the agent decode with the very same code (class-aware NMS, highest score first)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Boxes:
    """Detections of one input: corners in model-input pixels, scores, class ids."""

    xyxy: np.ndarray  # [K, 4] float32
    scores: np.ndarray  # [K] float32
    classes: np.ndarray  # [K] int64

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Boxes:
        return Boxes(self.xyxy[index], self.scores[index], self.classes[index])


def cxcywh_to_xyxy(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corners ``a`` [N, 4] and ``b`` [M, 4] → [N, M]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    result: np.ndarray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return result


#: Candidates NMS looks at, best first: a noisy map above the threshold can hold tens of
#: thousands, and the quadratic IoU matrix must stay small.
MAX_CANDIDATES = 4096


def nms(boxes: Boxes, *, iou_threshold: float, max_detections: int) -> Boxes:
    """Class-aware NMS: a box is dropped when one of its class with a higher score overlaps it
    by more than ``iou_threshold``."""
    order = np.argsort(-boxes.scores, kind="stable")[:MAX_CANDIDATES]
    boxes = boxes.take(order)
    if not len(boxes):
        return boxes
    # Shift each class far apart so that one IoU matrix serves every class.
    span = float(np.abs(boxes.xyxy).max()) + 1.0
    shifted = boxes.xyxy + (boxes.classes.astype(np.float32) * 2 * span)[:, None]
    overlap = iou_matrix(shifted, shifted)
    keep: list[int] = []
    dropped = np.zeros(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if dropped[i]:
            continue
        keep.append(i)
        if len(keep) == max_detections:
            break
        dropped |= overlap[i] > iou_threshold
    return boxes.take(np.asarray(keep, dtype=np.int64))
