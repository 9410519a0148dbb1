"""What a rollout gate answers (:class:`GateResult`), the :class:`Gate` Protocol every gate
implements, and the small base class they share; the gates are in :mod:`.gates` (counts) and
:mod:`.comparisons` (new version against the baseline, with confidence bounds)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from fleet_server.services.rollouts.evidence import Evidence
from fleet_server.services.rollouts.stats import Interval

GateStatus = Literal["pass", "fail", "wait", "skipped", "disabled"]


@dataclass(frozen=True)
class GateResult:
    name: str
    status: GateStatus
    value: float | None
    threshold: float
    samples: int
    min_samples: int
    detail: str = ""
    #: The one-sided confidence bounds of ``value`` (each at ``alpha``), when it is an estimate.
    low: float | None = None
    high: float | None = None
    alpha: float | None = None
    #: What the verdict rests on: ``shadow`` (the candidate's shadow reports beside the version
    #: it replaces: same inputs), ``pre-update`` (the devices' own history), ``control`` (other
    #: devices), ``none`` (no baseline), ``counts`` (device statuses), ``labels``.
    evidence: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("value", "low", "high"):
            value = data[key]
            if value is not None:
                data[key] = round(value, 6) if math.isfinite(value) else None
        return data


class Gate(Protocol):
    name: str

    def evaluate(self, evidence: Evidence, *, alpha: float) -> GateResult:
        """Judge ``evidence`` at false-alarm rate ``alpha``; never raises for missing data
        (that is ``wait``)."""
        ...


class GateBase:
    name = ""

    def _result(
        self,
        status: GateStatus,
        value: float | None,
        threshold: float,
        samples: int,
        min_samples: int,
        detail: str = "",
        interval: Interval | None = None,
        alpha: float | None = None,
        evidence: str = "",
    ) -> GateResult:
        low = interval.low if interval is not None else None
        high = interval.high if interval is not None else None
        return GateResult(
            self.name,
            status,
            value,
            threshold,
            samples,
            min_samples,
            detail,
            low,
            high,
            alpha,
            evidence,
        )

    def _needs(
        self, what: str, have: int, need: int, threshold: float, evidence: str = ""
    ) -> GateResult:
        detail = f"needs {need} {what}, has {have}"
        return self._result("wait", None, threshold, have, need, detail, evidence=evidence)
