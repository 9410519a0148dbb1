"""Input drift: what the fleet *sees* moved away from what the model was built on.

Three detectors, named ``input_*`` so that ``edgefleet fleet drift`` shows them beside the
output ones. The two distances compare, channel by channel, the sampled inputs' histograms
with the manifest's ``reference_stats`` (the converter's calibration set, on the same bins);
the class shift compares predicted-class counts with the manifest's ``output_distribution``,
or — without one — with the version's first ``reference_s`` on the fleet.

A channel drifts when its distance exceeds both an effect floor (``threshold``: how big a move
matters) and the distance's ``1 − alpha / channels`` quantile under no drift for this many
inputs (:func:`~fleet_server.services.drift.divergence.null_threshold`): a small window needs a
bigger move, a large one is held to the floor. The detector drifts when any channel does.
"""

from __future__ import annotations

from pydantic import Field

from fleet_server.services.drift.aggregate import Aggregate, DetectorConfig, DriftResult, Status
from fleet_server.services.drift.divergence import Distance, distance, null_threshold


class InputDistanceConfig(DetectorConfig):
    min_samples: int = Field(
        default=200, ge=1, description="Fewer sampled inputs in the window: insufficient."
    )
    alpha: float = Field(
        default=0.001,
        gt=0,
        lt=0.5,
        description="False-alarm rate allowed per evaluation under no drift, split over the "
        "channels (Bonferroni).",
    )


class InputPsiConfig(InputDistanceConfig):
    threshold: float = Field(
        default=0.2,
        gt=0,
        le=10,
        description="Population stability index a channel must exceed (0.2: the usual "
        "'significant shift').",
    )


class InputJsConfig(InputDistanceConfig):
    threshold: float = Field(
        default=0.1, gt=0, le=1, description="Jensen–Shannon distance (base 2) to exceed."
    )


class ClassShiftConfig(InputDistanceConfig):
    threshold: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Jensen–Shannon distance (base 2) between predicted-class distributions.",
    )


def _judge(
    name: str,
    kind: Distance,
    pairs: list[tuple[str, list[float], list[float]]],
    *,
    n: int,
    n_ref: int | None,
    floor: float,
    alpha: float,
    samples: int,
    reference_samples: int,
) -> DriftResult:
    """Judge each (label, window, reference) pair; report the one furthest past its bar."""
    per_pair = alpha / max(len(pairs), 1)
    worst: tuple[float, float, float, str] | None = None  # (ratio, value, bar, label)
    drifted: list[str] = []
    for label, window, reference in pairs:
        value = distance(kind, window, reference)
        bar = max(floor, null_threshold(kind, reference, n=n, n_ref=n_ref, alpha=per_pair))
        if value > bar:
            drifted.append(label)
        ratio = value / bar if bar > 0 else float("inf")
        if worst is None or ratio > worst[0]:
            worst = (ratio, value, bar, label)
    assert worst is not None
    _, value, bar, label = worst
    detail = f"{kind} {value:.3f} vs bar {bar:.3f} (floor {floor}) on {label}, n={n}"
    if drifted:
        detail += f"; drifted: {', '.join(drifted)}"
    status: Status = "drift" if drifted else "ok"
    return DriftResult(name, status, value, bar, samples, reference_samples, detail)


class InputDistance:
    """Per-channel PSI or Jensen–Shannon distance against the manifest's input histograms."""

    def __init__(self, name: str, kind: Distance, config: InputPsiConfig | InputJsConfig) -> None:
        self.name, self.kind, self.config = name, kind, config

    def evaluate(self, window: Aggregate, reference: Aggregate) -> DriftResult:
        n, ref_n = window.input_samples, reference.input_samples
        threshold = self.config.threshold
        if not reference.input_histograms or reference.source != "manifest":
            return DriftResult(
                self.name, "insufficient", None, threshold, n, ref_n,
                "the manifest has no reference_stats histograms",
            )  # fmt: skip
        shape = [len(h) for h in reference.input_histograms]
        if n < self.config.min_samples or [len(h) for h in window.input_histograms] != shape:
            detail = "" if n < self.config.min_samples else "input histograms on other bins"
            return DriftResult(self.name, "insufficient", None, threshold, n, ref_n, detail)
        pairs = [
            (f"channel {i}", [float(x) for x in w], [float(x) for x in r])
            for i, (w, r) in enumerate(
                zip(window.input_histograms, reference.input_histograms, strict=True)
            )
        ]
        return _judge(
            self.name, self.kind, pairs, n=n, n_ref=ref_n, floor=threshold,
            alpha=self.config.alpha, samples=n, reference_samples=ref_n,
        )  # fmt: skip


class ClassShift:
    """The predicted-class distribution moved (Jensen–Shannon distance)."""

    name = "input_class_shift"

    def __init__(self, config: ClassShiftConfig) -> None:
        self.config = config

    def evaluate(self, window: Aggregate, reference: Aggregate) -> DriftResult:
        n, ref_n = sum(window.class_counts.values()), sum(reference.class_counts.values())
        threshold = self.config.threshold
        if min(n, ref_n) < self.config.min_samples:
            return DriftResult(self.name, "insufficient", None, threshold, n, ref_n)
        keys = sorted(set(window.class_counts) | set(reference.class_counts))
        pair = (
            f"{len(keys)} classes ({reference.class_source} reference)",
            [float(window.class_counts.get(k, 0)) for k in keys],
            [float(reference.class_counts.get(k, 0)) for k in keys],
        )
        return _judge(
            self.name, "js", [pair], n=n, n_ref=ref_n, floor=threshold,
            alpha=self.config.alpha, samples=n, reference_samples=ref_n,
        )  # fmt: skip
