"""How much two versions agree, one measure per task (a Protocol and a hand-written registry).

A measure is fed both versions' real-valued outputs for the same row and returns how far apart
they are on that row (0 = identical; the rows with the highest scores are reported as the
inputs where the versions disagree most) and what each version said, in words. At the end it
gives the task's agreement (0..1, 1 = the same) and its named figures.

- classification: top-1 agreement; mean |Δconf| (the confidence each gives A's top class);
  row score: total-variation distance of the two probability vectors.
- detection: matched-box F1 at IoU 0.5, B's boxes matched greedily (by score) to A's of the
  same class; row score: 1 - the row's F1.
- segmentation: mean mask IoU (per row: over the classes either mask holds); row score: 1 - IoU.
- raw / regression: max and mean |Δ| and cosine over all outputs flattened; agreement: mean
  cosine (clipped at 0); row score: 1 - cosine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fleet_server.compare_engine.errors import CompareError
from fleet_server.services.quality.metrics import Box, iou

#: IoU at which a box of B matches a box of A.
MATCH_IOU = 0.5

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class RowVerdict:
    score: float
    said_a: str
    said_b: str
    #: The predicted class names, for labelled scoring (classifiers only).
    class_a: str | None = None
    class_b: str | None = None


class TaskMeasure(Protocol):
    def row(self, a: Outputs, b: Outputs) -> RowVerdict:
        """Both versions' outputs for one row (batch of 1)."""
        ...

    def summary(self) -> tuple[float, dict[str, float]]:
        """(agreement 0..1, named figures) over every row so far."""
        ...


class Classification:
    def __init__(self, model_a: Any, model_b: Any) -> None:
        self.a, self.b = model_a, model_b
        if model_a.scores_output is None or model_b.scores_output is None:
            raise CompareError("a classifier without a [batch, classes] scores output")
        self.rows = self.same = 0
        self.conf_delta = 0.0

    def row(self, a: Outputs, b: Outputs) -> RowVerdict:
        pa, pb = self.a.probabilities(a)[0], self.b.probabilities(b)[0]
        if pa.shape != pb.shape:
            raise CompareError(f"the versions have {pa.size} and {pb.size} classes")
        ia, ib = int(pa.argmax()), int(pb.argmax())
        self.rows += 1
        self.same += int(ia == ib)
        self.conf_delta += abs(float(pa[ia]) - float(pb[ia]))
        name_a, name_b = _label(self.a, ia), _label(self.b, ib)
        return RowVerdict(
            score=0.5 * float(np.abs(pa.astype(np.float64) - pb).sum()),
            said_a=f"{name_a} ({float(pa[ia]):.2f})",
            said_b=f"{name_b} ({float(pb[ib]):.2f})",
            class_a=name_a,
            class_b=name_b,
        )

    def summary(self) -> tuple[float, dict[str, float]]:
        n = max(self.rows, 1)
        agreement = self.same / n
        return agreement, {"top1_agreement": agreement, "mean_abs_conf_delta": self.conf_delta / n}


def _label(model: Any, index: int) -> str:
    labels = model.manifest.labels
    return str(labels[index]) if 0 <= index < len(labels) else str(index)


class Detection:
    def __init__(self, model_a: Any, model_b: Any) -> None:
        from agent.postprocess import Geometry, create_postprocessor

        self.geometry = [Geometry(source=None, resize=None)]
        self.post_a = create_postprocessor(model_a, None)
        self.post_b = create_postprocessor(model_b, None)
        self.a, self.b = model_a, model_b
        self.tp = self.fp = self.fn = 0

    def _boxes(self, post: Any, model: Any, outputs: Outputs) -> list[Box]:
        found = post(model.real(outputs), self.geometry)[0]["detections"]
        return [
            Box(d["label"], d["box"][0], d["box"][1], d["box"][2], d["box"][3], d["score"])
            for d in found
        ]

    def row(self, a: Outputs, b: Outputs) -> RowVerdict:
        ref, got = self._boxes(self.post_a, self.a, a), self._boxes(self.post_b, self.b, b)
        tp = matched_boxes(ref, got)
        fp, fn = len(got) - tp, len(ref) - tp
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        return RowVerdict(
            score=1.0 - f1(tp, fp, fn), said_a=f"{len(ref)} boxes", said_b=f"{len(got)} boxes"
        )

    def summary(self) -> tuple[float, dict[str, float]]:
        score = f1(self.tp, self.fp, self.fn)
        return score, {
            "matched_box_f1": score,
            "boxes_a": float(self.tp + self.fn),
            "boxes_b": float(self.tp + self.fp),
        }


def matched_boxes(ref: list[Box], got: list[Box]) -> int:
    """B's boxes (highest score first) matched greedily to unmatched A boxes of the same class
    with IoU >= 0.5; the number matched."""
    used: set[int] = set()
    for box in sorted(got, key=lambda b: -b.score):
        best, best_j = 0.0, -1
        for j, other in enumerate(ref):
            if j in used or other.label != box.label:
                continue
            overlap = iou(box, other)
            if overlap > best:
                best, best_j = overlap, j
        if best >= MATCH_IOU:
            used.add(best_j)
    return len(used)


def f1(tp: int, fp: int, fn: int) -> float:
    """F1 of matched boxes; 1 when neither version found anything."""
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


class Segmentation:
    def __init__(self, model_a: Any, model_b: Any) -> None:
        from agent.plugin_config import SegmentationPostConfig
        from agent.postprocess.segmentation import Segmentation as Post

        self.posts = [Post(SegmentationPostConfig(), m.manifest) for m in (model_a, model_b)]
        self.a, self.b = model_a, model_b
        self.rows = 0
        self.iou_sum = self.pixels_same = 0.0

    def _mask(self, index: int, model: Any, outputs: Outputs) -> np.ndarray:
        from edgefleet.decode import class_map

        return class_map(self.posts[index].post, model.real(outputs), 0)

    def row(self, a: Outputs, b: Outputs) -> RowVerdict:
        ma, mb = self._mask(0, self.a, a), self._mask(1, self.b, b)
        if ma.shape != mb.shape:
            raise CompareError(f"mask shapes differ: {list(ma.shape)} and {list(mb.shape)}")
        score = mask_iou(ma, mb)
        self.rows += 1
        self.iou_sum += score
        self.pixels_same += float(np.mean(ma == mb))
        return RowVerdict(
            score=1.0 - score,
            said_a=f"{len(np.unique(ma))} classes",
            said_b=f"{len(np.unique(mb))} classes",
        )

    def summary(self) -> tuple[float, dict[str, float]]:
        n = max(self.rows, 1)
        mean = self.iou_sum / n
        return mean, {"mean_mask_iou": mean, "pixel_agreement": self.pixels_same / n}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU over the classes either mask holds (1 for two empty masks)."""
    scores = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        in_a, in_b = a == c, b == c
        union = np.count_nonzero(in_a | in_b)
        scores.append(np.count_nonzero(in_a & in_b) / union if union else 1.0)
    return float(np.mean(scores)) if scores else 1.0


class Raw:
    def __init__(self, model_a: Any, model_b: Any) -> None:
        self.a, self.b = model_a, model_b
        self.rows = 0
        self.max_abs = self.abs_sum = self.cos_sum = 0.0
        self.values = 0

    def _flat(self, model: Any, outputs: Outputs) -> np.ndarray:
        real = model.real(outputs)
        parts = [np.asarray(real[name], dtype=np.float64).reshape(-1) for name in sorted(real)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def row(self, a: Outputs, b: Outputs) -> RowVerdict:
        va, vb = self._flat(self.a, a), self._flat(self.b, b)
        if va.shape != vb.shape:
            raise CompareError(f"the versions output {va.size} and {vb.size} values per row")
        diff = np.abs(va - vb)
        cos = cosine(va, vb)
        self.rows += 1
        self.values += diff.size
        self.abs_sum += float(diff.sum())
        self.max_abs = max(self.max_abs, float(diff.max()) if diff.size else 0.0)
        self.cos_sum += cos
        return RowVerdict(
            score=1.0 - cos,
            said_a=f"|a| {float(np.linalg.norm(va)):.3g}",
            said_b=f"|b| {float(np.linalg.norm(vb)):.3g}",
        )

    def summary(self) -> tuple[float, dict[str, float]]:
        mean_cos = self.cos_sum / max(self.rows, 1)
        return max(0.0, mean_cos), {
            "max_abs_diff": self.max_abs,
            "mean_abs_diff": self.abs_sum / max(self.values, 1),
            "mean_cosine": mean_cos,
        }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; 1 for two zero vectors, 0 when only one is zero."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


MeasureFactory = Callable[[Any, Any], TaskMeasure]

#: The manifest's ``task`` → its measure (hand-written: no plugin discovery).
MEASURES: dict[str, MeasureFactory] = {
    "classification": Classification,
    "detection": Detection,
    "segmentation": Segmentation,
    "regression": Raw,
    "raw": Raw,
}
