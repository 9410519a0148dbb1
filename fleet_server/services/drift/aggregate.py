"""What drift detectors judge: telemetry summed over buckets, a detector's verdict, and the
settings every detector shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["ok", "drift", "insufficient"]


@dataclass
class Aggregate:
    """Telemetry summed over some buckets: top-1 confidence histogram, inferences, errors, and
    what the inputs looked like (schema v2 telemetry: the sampled inputs' per-channel
    histograms on the manifest's bins, and the predicted-class counts).

    A *reference* aggregate built from a manifest's ``reference_stats`` carries only the input
    and class fields (``input_samples`` = the rows the converter measured).
    """

    histogram: list[int] = field(default_factory=list)
    inferences: int = 0
    errors: int = 0
    intervals: int = 0
    input_samples: int = 0
    input_histograms: list[list[int]] = field(default_factory=list)
    outside_reference: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    #: Where a reference's input histograms came from: "manifest" (none from the fleet).
    source: str = "fleet"
    #: Where a reference's class counts came from: "manifest" or "fleet" (its first period).
    class_source: str = "fleet"

    def add_inputs(
        self,
        samples: int,
        histograms: list[list[int]],
        outside_reference: int,
        class_counts: dict[str, int],
    ) -> None:
        """Add one interval's input statistics (histograms of another shape are skipped: a
        device on other bins cannot be compared bin by bin)."""
        if samples and histograms:
            shape = [len(h) for h in histograms]
            if not self.input_histograms:
                self.input_histograms = [[0] * k for k in shape]
            if shape == [len(h) for h in self.input_histograms]:
                self.input_histograms = [
                    [a + b for a, b in zip(mine, theirs, strict=True)]
                    for mine, theirs in zip(self.input_histograms, histograms, strict=True)
                ]
                self.input_samples += samples
                self.outside_reference += outside_reference
        for key, count in class_counts.items():
            self.class_counts[key] = self.class_counts.get(key, 0) + count

    def add(self, histogram: list[int], inferences: int, errors: int, intervals: int) -> None:
        if histogram:
            if not self.histogram:
                self.histogram = [0] * len(histogram)
            if len(histogram) == len(self.histogram):
                self.histogram = [a + b for a, b in zip(self.histogram, histogram, strict=True)]
        self.inferences += inferences
        self.errors += errors
        self.intervals += intervals

    @property
    def confidences(self) -> int:
        return sum(self.histogram)

    def mean_confidence(self) -> float | None:
        """Mean top-1 confidence from the histogram (equal bins over [0, 1], bin midpoints)."""
        total = self.confidences
        if not total:
            return None
        bins = len(self.histogram)
        return sum((i + 0.5) / bins * n for i, n in enumerate(self.histogram)) / total

    def error_rate(self) -> float | None:
        attempts = self.inferences + self.errors
        return self.errors / attempts if attempts else None


@dataclass(frozen=True)
class DriftResult:
    detector: str
    status: Status
    value: float | None
    threshold: float
    samples: int
    reference_samples: int
    detail: str = ""


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Off: the detector is not evaluated.")
    min_samples: int = Field(
        default=500, ge=1, description="Fewer in the window or the reference: insufficient."
    )
