"""Same-input evidence for the canary-stage gates: what the rollout's devices reported while
running the candidate **in shadow** beside the version the canary replaces (``ShadowReport`` s,
stored in ``shadow_reports``; issue #14).

Control devices see other inputs than the canary, and a device's own pre-update telemetry saw
other inputs than its post-update telemetry; a shadow report compares the two versions on the
*same* inputs, so where it exists it is the evidence the gates prefer (shadow > the canary's own
pre-update baseline > control devices). A report counts when its shadow is the candidate and
the model serving beside it is the version that device ran before the rollout
(``RolloutDevice.previous_*``): the pair the canary is about. They come from the rollout's shadow
stage or from a shadow an operator ran on those devices (``PUT /devices/{id}/shadow``), over the
baseline window before the rollout and since.

Per device and telemetry interval the gates read the paired p95 latency ratio (shadow p95 /
serving p95 on the same inputs) and, for classifiers, the mean |Δ top-1 confidence|; the
agreement (top-1, matched-box F1, ...) is carried to the report. :func:`pairs_of` is pure so
that simulations judge exactly what the engine judges.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from fleet_server.models import ShadowReportRow
from fleet_server.models.rollouts import RolloutDevice

#: At most this many of a device's newest shadow intervals count (as for telemetry).
MAX_INTERVALS_PER_DEVICE = 120
#: Members read per query (bounded IN lists).
CHUNK = 500


@dataclass
class ShadowPairs:
    """Shadow reports of the candidate against the version it replaces, per device."""

    #: log(shadow p95 / serving p95) per interval with both figures (same inputs).
    log_ratio_by_device: dict[str, list[float]] = field(default_factory=dict)
    #: Mean |Δ top-1 confidence| per interval (classifiers), and the interval's paired inputs.
    conf_delta_by_device: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    class_of: dict[str, str] = field(default_factory=dict)
    intervals: int = 0
    paired: int = 0
    disagreements: int = 0
    errors: int = 0

    def add(self, device_id: str, device_class: str | None, row: Any) -> None:
        figures: Mapping[str, Any] = row.figures or {}
        paired = int(row.paired)
        self.class_of[device_id] = device_class or "unknown"
        self.intervals += 1
        self.paired += paired
        self.disagreements += int(row.disagreements)
        errors = figures.get("errors")
        if isinstance(errors, dict):
            self.errors += sum(n for n in errors.values() if isinstance(n, int) and n > 0)
        if not paired:
            return
        serving, shadow = (
            _number(figures.get("serving_p95_ms")),
            _number(figures.get("shadow_p95_ms")),
        )
        if serving is not None and shadow is not None and serving > 0 and shadow > 0:
            self.log_ratio_by_device.setdefault(device_id, []).append(math.log(shadow / serving))
        delta = _number(figures.get("mean_abs_conf_delta"))
        if delta is not None and 0.0 <= delta <= 1.0:
            self.conf_delta_by_device.setdefault(device_id, []).append((delta, paired))

    @property
    def agreement(self) -> float | None:
        return (self.paired - self.disagreements) / self.paired if self.paired else None

    def latency_intervals(self, device_class: str) -> dict[str, list[float]]:
        """Each device of ``device_class`` with its intervals' log p95 ratios."""
        return {
            d: v
            for d, v in self.log_ratio_by_device.items()
            if self.class_of.get(d) == device_class
        }

    def classes(self) -> set[str]:
        return {self.class_of[d] for d in self.log_ratio_by_device}

    def conf_paired(self) -> int:
        """Paired inputs behind the |Δ confidence| figures."""
        return sum(n for values in self.conf_delta_by_device.values() for _, n in values)

    def summary(self) -> dict[str, Any]:
        ratios = [v for values in self.log_ratio_by_device.values() for v in values]
        weighted = [(d, n) for values in self.conf_delta_by_device.values() for d, n in values]
        total = sum(n for _, n in weighted)
        return {
            "devices": len(self.class_of),
            "intervals": self.intervals,
            "paired": self.paired,
            "disagreements": self.disagreements,
            "agreement": _round(self.agreement),
            "errors": self.errors,
            "latency_ratio_p95": _round(math.exp(math.fsum(ratios) / len(ratios)))
            if ratios
            else None,
            "mean_abs_conf_delta": _round(math.fsum(d * n for d, n in weighted) / total)
            if total
            else None,
        }


def pairs_of(
    rows: Iterable[Any], members: Iterable[RolloutDevice], target: tuple[str, str]
) -> ShadowPairs:
    """Sum the shadow report ``rows`` that compare ``target`` with the version each member ran
    before the rollout (other rows are left out), newest :data:`MAX_INTERVALS_PER_DEVICE` per
    device. A row without its serving model (``figures["serving"]``) says nothing about which
    pair it compared and is left out too."""
    before = {
        m.device_id: (m.previous_name, m.previous_version, m.device_class)
        for m in members
        if m.previous_name is not None and m.previous_version is not None
    }
    by_device: dict[str, list[Any]] = {}
    for row in rows:
        known = before.get(row.device_id)
        if known is None or (row.model_name, row.model_version) != target:
            continue
        serving = (row.figures or {}).get("serving")
        if not isinstance(serving, dict):
            continue
        pair = (serving.get("name"), serving.get("version"))
        if pair != known[:2] or pair == target:
            continue
        by_device.setdefault(row.device_id, []).append(row)
    pairs = ShadowPairs()
    for device_id, device_rows in sorted(by_device.items()):
        device_rows.sort(key=lambda r: (r.ts, r.seq), reverse=True)
        for row in device_rows[:MAX_INTERVALS_PER_DEVICE]:
            pairs.add(device_id, before[device_id][2], row)
    return pairs


def read_pairs(
    *,
    session: Session,
    members: Sequence[RolloutDevice],
    target: tuple[str, str],
    since: datetime,
) -> ShadowPairs:
    """The members' shadow reports of ``target`` sent since ``since``, as :func:`pairs_of`."""
    ids = sorted({m.device_id for m in members if m.previous_name is not None})
    rows: list[Any] = []
    for start in range(0, len(ids), CHUNK):
        query = (
            select(ShadowReportRow)
            .where(col(ShadowReportRow.device_id).in_(ids[start : start + CHUNK]))
            .where(col(ShadowReportRow.model_name) == target[0])
            .where(col(ShadowReportRow.model_version) == target[1])
            .where(col(ShadowReportRow.ts) >= since)
            .order_by(col(ShadowReportRow.ts).desc())
            .limit(MAX_INTERVALS_PER_DEVICE * CHUNK)
        )
        rows.extend(session.exec(query))
    return pairs_of(rows, members, target)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
