"""Quality from labels: pure functions, no database (tested against scikit-learn).

Classifiers: accuracy with a Wilson score interval (honest at small n and near 0 or 1, where
the normal interval leaves [0, 1] or collapses to a point), per-class precision, recall and F1
(sklearn's definitions: a class never predicted has precision 0), and a confusion matrix
(rows: label, columns: prediction). Detectors: mAP@0.5 — per class, predictions sorted by
score are matched greedily to unmatched labelled boxes of the same class with IoU ≥ 0.5; the
average precision is the area under the all-point interpolated precision/recall curve
(PASCAL VOC 2010+); the mean is over classes that have labelled boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

#: z for a two-sided 95 % interval.
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there is nothing to judge."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ClassScore:
    precision: float
    recall: float
    f1: float
    support: int  # labelled samples of the class
    predicted: int  # samples predicted as the class


@dataclass(frozen=True)
class ClassifierQuality:
    samples: int
    correct: int
    accuracy: float | None
    accuracy_ci: tuple[float, float]
    classes: list[str] = field(default_factory=list)
    per_class: dict[str, ClassScore] = field(default_factory=dict)
    #: confusion[i][j]: labelled classes[i], predicted classes[j].
    confusion: list[list[int]] = field(default_factory=list)


def classifier_quality(pairs: Sequence[tuple[str, str | None]]) -> ClassifierQuality:
    """``pairs`` of (label, predicted); a missing prediction counts as wrong (class '?')."""
    labelled = [(label, predicted if predicted is not None else "?") for label, predicted in pairs]
    n = len(labelled)
    correct = sum(1 for label, predicted in labelled if label == predicted)
    classes = sorted({x for pair in labelled for x in pair})
    index = {c: i for i, c in enumerate(classes)}
    confusion = [[0] * len(classes) for _ in classes]
    for label, predicted in labelled:
        confusion[index[label]][index[predicted]] += 1
    per_class: dict[str, ClassScore] = {}
    for c, i in index.items():
        tp = confusion[i][i]
        support = sum(confusion[i])
        predicted_as = sum(row[i] for row in confusion)
        precision = tp / predicted_as if predicted_as else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = ClassScore(precision, recall, f1, support, predicted_as)
    return ClassifierQuality(
        samples=n,
        correct=correct,
        accuracy=correct / n if n else None,
        accuracy_ci=wilson(correct, n),
        classes=classes,
        per_class=per_class,
        confusion=confusion,
    )


@dataclass(frozen=True)
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0


def iou(a: Box, b: Box) -> float:
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class DetectorQuality:
    images: int
    boxes: int  # labelled boxes
    map50: float | None
    per_class_ap: dict[str, float] = field(default_factory=dict)


def average_precision(recall: Sequence[float], precision: Sequence[float]) -> float:
    """All-point interpolated area under the precision/recall curve."""
    r = [0.0, *recall, 1.0]
    p = [0.0, *precision, 0.0]
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    return sum((r[i + 1] - r[i]) * p[i + 1] for i in range(len(r) - 1))


def detector_quality(
    images: Sequence[tuple[Sequence[Box], Sequence[Box]]], iou_threshold: float = 0.5
) -> DetectorQuality:
    """``images`` of (labelled boxes, predicted boxes with scores)."""
    classes = sorted({b.label for truth, _ in images for b in truth})
    per_class: dict[str, float] = {}
    for c in classes:
        total = sum(1 for truth, _ in images for b in truth if b.label == c)
        scored: list[tuple[float, int, Box]] = [
            (b.score, i, b) for i, (_, predicted) in enumerate(images) for b in predicted
            if b.label == c
        ]  # fmt: skip
        scored.sort(key=lambda t: -t[0])
        used: set[tuple[int, int]] = set()
        tp = fp = 0
        recall: list[float] = []
        precision: list[float] = []
        for _, i, box in scored:
            truth = [(j, t) for j, t in enumerate(images[i][0]) if t.label == c]
            best, best_j = 0.0, -1
            for j, t in truth:
                overlap = iou(box, t)
                if overlap > best and (i, j) not in used:
                    best, best_j = overlap, j
            if best >= iou_threshold:
                used.add((i, best_j))
                tp += 1
            else:
                fp += 1
            recall.append(tp / total)
            precision.append(tp / (tp + fp))
        per_class[c] = average_precision(recall, precision)
    boxes = sum(len(truth) for truth, _ in images)
    mean = sum(per_class.values()) / len(per_class) if per_class else None
    return DetectorQuality(images=len(images), boxes=boxes, map50=mean, per_class_ap=per_class)
