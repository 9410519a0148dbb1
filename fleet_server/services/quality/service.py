"""Quality of one model version from its labelled samples, computed twice and always labelled
with which: on the **random** samples (reason "random": an unbiased sample of what the fleet
sees — the number to quote) and on **all** labelled samples (hard examples included: biased
towards the model's mistakes by construction), overall and per device class.

Classifiers compare a sample's ``label`` with its ``predicted`` (an index is read through the
manifest's labels). Detectors compare its labelled ``boxes`` with the predicted boxes in
``outputs``, read as rows of six numbers ``x1, y1, x2, y2, score, class_index`` (the agent's
detection layout; a trailing partial row is ignored).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlmodel import Session, col, select

from fleet_server.models import Device, ModelVersion
from fleet_server.models.samples import Sample
from fleet_server.services.errors import NotFound
from fleet_server.services.quality.metrics import (
    Box,
    ClassifierQuality,
    DetectorQuality,
    classifier_quality,
    detector_quality,
    wilson,
)

Subset = Literal["random", "all"]
SUBSETS: tuple[Subset, ...] = ("random", "all")


class QualityError(NotFound):
    """The model version does not exist (404)."""


@dataclass(frozen=True)
class LabelCounts:
    """Labelled classifier samples and how many the model got right."""

    labelled: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def _label_of(value: str | None, labels: Sequence[str]) -> str | None:
    if value is not None and value.isdigit() and int(value) < len(labels):
        return labels[int(value)]
    return value


def _boxes(raw: Any, labels: Sequence[str], *, scored: bool) -> list[Box]:
    if scored:
        values = [float(x) for x in raw or []]
        rows = [values[i : i + 6] for i in range(0, len(values) - 5, 6)]
        return [
            Box(_label_of(str(int(r[5])), labels) or str(int(r[5])), r[0], r[1], r[2], r[3], r[4])
            for r in rows
        ]
    return [
        Box(str(b["label"]), float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"]))
        for b in raw or []
    ]


def _labelled(
    session: Session,
    name: str,
    versions: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
) -> list[Sample]:
    query = (
        select(Sample)
        .where(Sample.model_name == name, col(Sample.model_version).in_(list(versions)))
        .where(col(Sample.labelled).is_(True))
    )
    if reason is not None:
        query = query.where(Sample.reason == reason)
    if since is not None:
        query = query.where(col(Sample.captured_at) >= since)
    if until is not None:
        query = query.where(col(Sample.captured_at) < until)
    return list(session.exec(query.order_by(col(Sample.id))))


def label_counts(
    session: Session,
    name: str,
    versions: Sequence[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
) -> LabelCounts:
    """Classifier label counts over ``versions`` of model ``name``, of the samples captured in
    [since, until), of one capture ``reason`` if given (for the rollout gate and report and
    the accuracy-drop trigger)."""
    counts = label_counts_by_device(
        session, name, versions, since=since, until=until, reason=reason
    )
    return LabelCounts(
        sum(c.labelled for c in counts.values()), sum(c.correct for c in counts.values())
    )


def label_counts_by_device(
    session: Session,
    name: str,
    versions: Sequence[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
) -> dict[str, LabelCounts]:
    """:func:`label_counts` per capturing device (the rollout gate compares a device's labels
    on the new version with its own on the old one: devices see different inputs)."""
    if not versions:
        return {}
    labels_of: dict[str, list[str]] = {}
    for row in session.exec(
        select(ModelVersion).where(
            ModelVersion.name == name, col(ModelVersion.version).in_(list(versions))
        )
    ):
        labels_of[row.version] = [str(x) for x in row.manifest.get("labels") or []]
    counts: dict[str, LabelCounts] = {}
    for s in _labelled(session, name, versions, since, until, reason):
        if s.label is None:
            continue
        right = _label_of(s.predicted, labels_of.get(s.model_version, [])) == s.label
        own = counts.get(s.device_id, LabelCounts())
        counts[s.device_id] = LabelCounts(own.labelled + 1, own.correct + right)
    return counts


def _classifier(samples: list[Sample], labels: Sequence[str]) -> dict[str, Any]:
    result: ClassifierQuality = classifier_quality(
        [(s.label or "", _label_of(s.predicted, labels)) for s in samples if s.label is not None]
    )
    data = asdict(result)
    data["accuracy_ci"] = {"low": result.accuracy_ci[0], "high": result.accuracy_ci[1],
                           "method": "wilson", "level": 0.95}  # fmt: skip
    return data


def _detector(samples: list[Sample], labels: Sequence[str]) -> dict[str, Any]:
    images = [
        (_boxes(s.boxes, labels, scored=False), _boxes(s.outputs, labels, scored=True))
        for s in samples
        if s.boxes is not None
    ]
    result: DetectorQuality = detector_quality(images)
    return asdict(result)


def version_quality(session: Session, name: str, version: str) -> dict[str, Any]:
    """The quality report of ``name``@``version`` (JSON-ready)."""
    row = session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()
    if row is None:
        raise QualityError(f"model {name}@{version} does not exist")
    labels = [str(x) for x in row.manifest.get("labels") or []]
    detection = row.task == "detection"
    samples = _labelled(session, name, [version])
    device_ids = {s.device_id for s in samples}
    classes = {
        d.device_id: d.device_class or "unknown"
        for d in session.exec(select(Device).where(col(Device.device_id).in_(device_ids)))
    }
    compute = _detector if detection else _classifier
    report: dict[str, Any] = {
        "model": name,
        "version": version,
        "task": row.task,
        "metric": "map50" if detection else "accuracy",
        "subsets": {},
    }
    for subset in SUBSETS:
        chosen = [s for s in samples if subset == "all" or s.reason == "random"]
        by_class: dict[str, list[Sample]] = defaultdict(list)
        for s in chosen:
            by_class[classes.get(s.device_id, "unknown")].append(s)
        report["subsets"][subset] = {
            "subset": subset,
            "description": "random (unbiased) samples only"
            if subset == "random"
            else "all labelled samples (hard examples included: biased)",
            "overall": compute(chosen, labels),
            "by_device_class": {k: compute(v, labels) for k, v in sorted(by_class.items())},
        }
    return report


__all__ = ["LabelCounts", "QualityError", "label_counts", "version_quality", "wilson"]
