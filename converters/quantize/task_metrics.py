"""Fidelity per task, against the fp32 model's own outputs: box F1 for detectors, mean mask
IoU for segmenters. Both decode with :mod:`edgefleet.decode`, the decoder the agent serves
with, so the budget loop counts the boxes and masks a device would print."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefleet.contract.postprocess import DetectorPost, MaskPost, Postprocess
from edgefleet.decode import Boxes, DecodeError, Size, class_map, detect, iou_matrix

#: Two boxes of one class match when they overlap at least this much (issue #12).
MATCH_IOU = 0.5


@dataclass(frozen=True)
class TaskDecode:
    """What the converter knows about a model's task: its recorded layout and input size."""

    post: Postprocess
    size: Size

    @property
    def metric(self) -> str:
        return "mask_iou" if isinstance(self.post, MaskPost) else "box_f1"


def _rows(outputs: Mapping[str, Any]) -> int:
    return min((len(v) for v in outputs.values()), default=0)


def matched(got: Boxes, want: Boxes, iou: float = MATCH_IOU) -> int:
    """Greedy one-to-one matches (same class, IoU >= ``iou``), highest-scoring ``got`` first."""
    if not len(got) or not len(want):
        return 0
    overlap = iou_matrix(got.xyxy, want.xyxy)
    overlap[got.classes[:, None] != want.classes[None, :]] = 0.0
    taken = np.zeros(len(want), dtype=bool)
    count = 0
    for i in np.argsort(-got.scores, kind="stable"):
        row = np.where(taken, -1.0, overlap[i])
        j = int(row.argmax())
        if row[j] >= iou:
            taken[j] = True
            count += 1
    return count


def box_counts(
    got: Mapping[str, Any], fp32: Mapping[str, Any], post: DetectorPost, size: Size
) -> tuple[int, int, int]:
    """Matched boxes, boxes ``got`` decodes and boxes fp32 decodes, summed over ``got``'s rows."""
    hits = n_got = n_want = 0
    for r in range(_rows(got)):
        mine, ref = detect(post, got, r, size), detect(post, fp32, r, size)
        hits += matched(mine, ref)
        n_got += len(mine)
        n_want += len(ref)
    return hits, n_got, n_want


def f1_of(hits: int, n_got: int, n_want: int) -> float:
    """Pooled F1 from counts (1.0 when neither side has a box)."""
    return 1.0 if n_got + n_want == 0 else 2 * hits / (n_got + n_want)


def box_f1(
    got: Mapping[str, Any], fp32: Mapping[str, Any], post: DetectorPost, size: Size
) -> float:
    """F1 of the boxes ``got`` decodes against fp32's, pooled over rows (1.0: both empty)."""
    return f1_of(*box_counts(got, fp32, post, size))


def mask_iou(got: Mapping[str, Any], fp32: Mapping[str, Any], post: MaskPost) -> float:
    """Mean over rows of the mean IoU of the foreground classes (class >= 1) either map has;
    a row where neither has foreground scores 1.0."""
    values = []
    for r in range(_rows(fp32)):
        a, b = class_map(post, got, r), class_map(post, fp32, r)
        classes = [c for c in np.union1d(np.unique(a), np.unique(b)) if c >= 1]
        ious = [float(((a == c) & (b == c)).sum() / ((a == c) | (b == c)).sum()) for c in classes]
        values.append(float(np.mean(ious)) if ious else 1.0)
    return float(np.mean(values)) if values else 1.0


def task_score(task: TaskDecode, got: Mapping[str, Any], fp32: Mapping[str, Any]) -> float:
    """The task's measure of ``got`` against fp32 (0.0 when ``got`` cannot be decoded)."""
    try:
        if isinstance(task.post, MaskPost):
            return mask_iou(got, fp32, task.post)
        return box_f1(got, fp32, task.post, task.size)
    except (DecodeError, KeyError, IndexError):
        return 0.0
