"""Capture samplers: one small rule per reason, behind a Protocol and a hand-written registry.

A sampler looks at one :class:`Observation` (what the model said about one input, and the
input's outside-reference score) and says whether the policy wants it. The order of
:data:`SAMPLERS` is the order reasons are tried; ``random`` is not here: it is decided before
and independently of them (:class:`agent.capture.capturer.Capturer`), so the random samples are
an unbiased sample of what the device sees, not of what the other rules left over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from edgefleet.contract import CapturePolicy, CaptureReason


@dataclass(frozen=True, slots=True)
class Observation:
    """What is known about one input when the capture decision is made."""

    confidence: float | None = None
    margin: float | None = None
    predicted: str | None = None
    input_score: float | None = None


class Sampler(Protocol):
    """One capture reason: is this input a hard example under ``policy``?"""

    reason: CaptureReason

    def wants(self, policy: CapturePolicy, seen: Observation) -> bool: ...


class LowConfidence:
    reason: CaptureReason = "low_confidence"

    def wants(self, policy: CapturePolicy, seen: Observation) -> bool:
        t = policy.low_confidence
        return t is not None and seen.confidence is not None and seen.confidence < t


class SmallMargin:
    reason: CaptureReason = "margin"

    def wants(self, policy: CapturePolicy, seen: Observation) -> bool:
        m = policy.margin
        return m is not None and seen.margin is not None and seen.margin < m


class OutsideReference:
    reason: CaptureReason = "outside_reference"

    def wants(self, policy: CapturePolicy, seen: Observation) -> bool:
        t = policy.outside_reference
        return t is not None and seen.input_score is not None and seen.input_score > t


class PredictedClass:
    reason: CaptureReason = "class"

    def wants(self, policy: CapturePolicy, seen: Observation) -> bool:
        return seen.predicted is not None and seen.predicted in policy.classes


#: The samplers, in the order their reasons are tried (the first that fires names the sample).
SAMPLERS: Final[dict[CaptureReason, Sampler]] = {
    "low_confidence": LowConfidence(),
    "margin": SmallMargin(),
    "outside_reference": OutsideReference(),
    "class": PredictedClass(),
}


def reason_for(policy: CapturePolicy, seen: Observation) -> CaptureReason | None:
    """The first reason in :data:`SAMPLERS` order whose sampler wants the input, or None."""
    for sampler in SAMPLERS.values():
        if sampler.wants(policy, seen):
            return sampler.reason
    return None
