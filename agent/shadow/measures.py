"""How far a shadow model's answer is from the serving model's, on one input, per task.

One :class:`Measure` per manifest task in :data:`MEASURES` (a hand-written registry). Each
returns a :class:`Comparison`: whether the two agree (what makes an input a
``shadow_disagreement`` capture) and its figures, named as the :class:`ShadowReport` fields they
feed; :class:`Tally` sums them over a telemetry interval (``max_*`` by maximum, the rest by
mean). The agreement thresholds are the contract's (:mod:`edgefleet.contract.shadow`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agent.engine import LoadedModel
from agent.state import Serving
from edgefleet.contract.manifest import Task
from edgefleet.contract.shadow import AGREE_BOX_F1, AGREE_MASK_IOU, AGREE_RAW_ABS

#: Detections match when their boxes overlap at least this much (and name the same class).
MATCH_IOU = 0.5


@dataclass(frozen=True)
class Answer:
    """What one model made of one input: its real-valued outputs and its postprocessed result."""

    serving: Serving
    outputs: Mapping[str, np.ndarray]
    result: Mapping[str, Any]


@dataclass(frozen=True)
class Comparison:
    agrees: bool
    figures: Mapping[str, float]


class Measure(Protocol):
    #: Whether :meth:`compare` reads :attr:`Answer.result` (the postprocessed result): when
    #: not, the shadow worker skips postprocessing the shadow's outputs (GIL time it would
    #: take from the serving thread; ~20 µs an input on the digits model).
    uses_result: bool

    def compare(self, serving: Answer, shadow: Answer) -> Comparison:
        """Compare the two answers to one input; ValueError if they cannot be compared."""
        ...


class Top1:
    """Classifiers: the same top-1 class, and |top-1 score − shadow top-1 score|."""

    uses_result = False

    def compare(self, serving: Answer, shadow: Answer) -> Comparison:
        a = _scores(serving)
        b = _scores(shadow)
        if a is None or b is None:
            return RawDiff().compare(serving, shadow)
        ia, ib = int(a.argmax()), int(b.argmax())
        agrees, figures = self.of_top1((ia, float(a[ia])), (ib, float(b[ib])))
        return Comparison(agrees, figures)

    @staticmethod
    def of_top1(a: tuple[int, float], b: tuple[int, float]) -> tuple[bool, dict[str, float]]:
        """:meth:`compare` from the two top-1s (class index, confidence) alone: the shadow
        worker's fast path, with the serving top-1 the inference thread already computed."""
        return a[0] == b[0], {"mean_abs_conf_delta": min(abs(a[1] - b[1]), 1.0)}


def top1(model: LoadedModel, outputs: Mapping[str, np.ndarray]) -> tuple[int, float] | None:
    """Batch row 0's top-1 (class index, confidence) of a classifier, as
    :meth:`LoadedModel.probabilities` would give it (softmax unless the scores are already in
    [0, 1]), on the one row alone: a handful of small numpy calls and no copies of the outputs
    (the shadow worker's per-input work is GIL time taken from the serving thread). None when
    the model has no score output (then :meth:`Top1.compare` decides)."""
    name = model.scores_output
    if name is None or name not in outputs:
        return None
    value = outputs[name]
    if name in model.output_quant:
        value = model.real({name: value})[name]
    if not value.size or not value.ndim:
        return None
    row = value.reshape(value.shape[0], -1)[0].astype(np.float32, copy=False)
    index = int(row.argmax())
    top = row[index]
    if top > 1 or row.min() < 0:  # logits: the softmax's top is exp(0) / sum(exp(row - top))
        return index, float(np.float32(1.0) / np.exp(row - top).sum())
    return index, float(top)


class BoxF1:
    """Detectors: F1 of boxes matched greedily (by score) at IoU ≥ 0.5 with the same class;
    two empty answers agree (F1 1)."""

    uses_result = True

    def compare(self, serving: Answer, shadow: Answer) -> Comparison:
        f1 = box_f1(serving.result.get("detections") or [], shadow.result.get("detections") or [])
        return Comparison(f1 >= AGREE_BOX_F1, {"box_f1": f1})


class MaskIoU:
    """Segmenters: mean IoU over the classes either class map holds (model-input geometry)."""

    uses_result = False

    def compare(self, serving: Answer, shadow: Answer) -> Comparison:
        a, b = class_map(serving), class_map(shadow)
        if a.shape != b.shape:
            raise ValueError(f"class maps differ in shape: {a.shape} vs {b.shape}")
        iou = mask_iou(a, b)
        return Comparison(iou >= AGREE_MASK_IOU, {"mask_iou": iou})


class RawDiff:
    """Any model: the largest and the mean |difference| over outputs of the same name."""

    uses_result = False

    def compare(self, serving: Answer, shadow: Answer) -> Comparison:
        names = sorted(set(serving.outputs) & set(shadow.outputs))
        if not names:
            raise ValueError("the two models share no output name")
        largest = total = 0.0
        count = 0
        for name in names:
            a, b = serving.outputs[name], shadow.outputs[name]
            if a.shape != b.shape:
                raise ValueError(f"output {name!r} differs in shape: {a.shape} vs {b.shape}")
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            if not np.isfinite(diff).all():
                raise ValueError(f"output {name!r} is not finite")
            if diff.size:
                largest = max(largest, float(diff.max()))
                total += float(diff.sum())
                count += diff.size
        mean = total / count if count else 0.0
        return Comparison(
            largest <= AGREE_RAW_ABS, {"max_abs_diff": largest, "mean_abs_diff": mean}
        )


MEASURES: dict[Task, Measure] = {
    "classification": Top1(),
    "detection": BoxF1(),
    "segmentation": MaskIoU(),
    "raw": RawDiff(),
}


@dataclass
class Tally:
    """Comparisons over one interval: agreement counts and the figures' sums and maxima."""

    paired: int = 0
    disagreements: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, comparison: Comparison) -> None:
        self.add_one(comparison.agrees, comparison.figures)

    def add_one(self, agrees: bool, figures: Mapping[str, float]) -> None:
        self.paired += 1
        if not agrees:
            self.disagreements += 1
        for name, value in figures.items():
            if name.startswith("max_"):
                self.sums[name] = max(self.sums.get(name, 0.0), value)
            else:
                self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def figures(self) -> dict[str, float]:
        """Each figure over the interval (``max_*`` the largest, the rest their mean)."""
        return {
            name: value if name.startswith("max_") else value / self.counts[name]
            for name, value in self.sums.items()
        }

    @property
    def agreement(self) -> float | None:
        return None if self.paired == 0 else (self.paired - self.disagreements) / self.paired


def _scores(answer: Answer) -> np.ndarray | None:
    model = answer.serving.model
    if model.scores_output is None:
        return None
    scores = model.probabilities(dict(answer.outputs))
    return None if scores is None or not scores.size else scores[0]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    w = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    h = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = w * h
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def box_f1(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> float:
    """F1 of ``b``'s boxes against ``a``'s: greedy by ``b``'s score, IoU ≥ 0.5, same class."""
    if not a and not b:
        return 1.0
    taken: set[int] = set()
    matched = 0
    for det in sorted(b, key=lambda d: -float(d["score"])):
        best, best_iou = -1, MATCH_IOU
        for i, ref in enumerate(a):
            if i in taken or ref["class"] != det["class"]:
                continue
            iou = box_iou(ref["box"], det["box"])
            if iou >= best_iou:
                best, best_iou = i, iou
        if best >= 0:
            taken.add(best)
            matched += 1
    return 2.0 * matched / (len(a) + len(b))


def class_map(answer: Answer) -> np.ndarray:
    """The class per pixel of a segmenter's first 3- or 4-dimensional output, batch row 0."""
    manifest = answer.serving.model.manifest
    spec = next((s for s in manifest.outputs if len(s.shape) in (3, 4)), None)
    if spec is None or spec.name not in answer.outputs:
        raise ValueError("no [B,C,H,W] or [B,H,W] output")
    value = answer.outputs[spec.name]
    if value.ndim == 4:
        layout = manifest.preprocessing.layout if manifest.preprocessing else "nchw"
        value = value.argmax(axis=3 if layout == "nhwc" else 1)
    return np.asarray(value[0])


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU over the classes present in either map (1.0 for two empty maps)."""
    classes = np.union1d(np.unique(a), np.unique(b))
    if not classes.size:
        return 1.0
    ious = [
        float(np.logical_and(a == c, b == c).sum()) / float(np.logical_or(a == c, b == c).sum())
        for c in classes
    ]
    return float(np.mean(ious))
