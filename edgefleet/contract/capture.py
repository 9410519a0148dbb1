"""What the fleet sends back of what it sees (schema version 2): input statistics, the capture
policy the server hands a device, and the metadata of one captured sample.

* :class:`InputStats` — per telemetry interval (or of one sample), on the manifest's
  ``reference_stats.histogram_edges``: the same bins the converter wrote, so the server compares
  like with like (population stability, Jensen–Shannon) without re-binning.
* :class:`CapturePolicy` — which inputs a device keeps as hard examples and within which budgets;
  sent in the desired state, per model name and overridable per version. The device's own
  config may only make it stricter (:meth:`CapturePolicy.tightened`).
* :class:`SampleMeta` — the JSON part of ``POST /api/v1/samples``; ``sample_id`` is the
  idempotency key, so a replayed upload is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final, Literal, get_args

from msgspec import Meta, field

from edgefleet.contract.common import (
    SCHEMA_VERSION,
    AwareDatetime,
    DeviceId,
    ModelRef,
    Sha256Hex,
    Strict,
)

__all__ = [
    "CAPTURE_REASONS",
    "DEFAULT_OUTSIDE_REFERENCE",
    "MAX_BINS",
    "MAX_CHANNELS",
    "RARE_BIN_MASS",
    "SAMPLE_CONTENT_TYPES",
    "SAMPLE_ID_PATTERN",
    "CapturePolicy",
    "CaptureReason",
    "InputStats",
    "SampleMeta",
]

#: At most this many channels (image) or features (vector) are summarised.
MAX_CHANNELS: Final = 64
#: At most this many histogram bins per channel (``len(histogram_edges) - 1``).
MAX_BINS: Final = 256
#: A reference bin holding less than this share of the reference mass is "rare": the per-sample
#: outside-reference score is the share of a sample's values that fall in rare bins (or outside
#: the edges, which the reference never saw).
RARE_BIN_MASS: Final = 0.001
#: The outside-reference threshold a device uses to count ``InputStats.outside_reference`` when
#: the capture policy sets none.
DEFAULT_OUTSIDE_REFERENCE: Final = 0.5
#: A sample id: generated on the device, 8..64 of [A-Za-z0-9_-]; URL- and file-name-safe.
SAMPLE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{8,64}\Z"

CaptureReason = Literal[
    "low_confidence", "margin", "outside_reference", "class", "random", "shadow_disagreement"
]
CAPTURE_REASONS: Final[tuple[CaptureReason, ...]] = get_args(CaptureReason)
SampleContentType = Literal["image/jpeg", "application/x-npy"]
SAMPLE_CONTENT_TYPES: Final[tuple[SampleContentType, ...]] = get_args(SampleContentType)

Count = Annotated[int, Meta(ge=0, le=2**53)]
Share = Annotated[float, Meta(ge=0, le=1)]
ClassKey = Annotated[
    str, Meta(min_length=1, max_length=128, description="A class label or index, as a string.")
]


class InputStats(Strict, frozen=True, kw_only=True):
    """Statistics of the preprocessed inputs, per channel (images, NCHW or NHWC) or per feature
    (vectors), over the manifest's ``reference_stats.histogram_edges``.

    Values below the first edge are counted in the first bin and above the last in the last, as
    the converter's reference histograms do, so every sampled value is counted once."""

    samples: Annotated[int, Meta(ge=1, le=2**53, description="Inputs sampled in the interval.")]
    channel_mean: Annotated[
        list[float], Meta(max_length=MAX_CHANNELS, description="Mean of the values per channel.")
    ]
    channel_std: Annotated[
        list[float],
        Meta(max_length=MAX_CHANNELS, description="Population std of the values per channel."),
    ]
    channel_histograms: Annotated[
        list[Annotated[list[Count], Meta(max_length=MAX_BINS)]],
        Meta(
            max_length=MAX_CHANNELS,
            description="Value counts per channel over the manifest's histogram_edges "
            "(out-of-range values in the first/last bin).",
        ),
    ]
    outside_reference: Annotated[
        int,
        Meta(
            ge=0,
            le=2**53,
            description="Sampled inputs whose outside-reference score exceeded the capture "
            "policy's outside_reference threshold (or 0.5 without one).",
        ),
    ] = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        channels = len(self.channel_mean)
        if len(self.channel_std) != channels or len(self.channel_histograms) != channels:
            raise ValueError(
                "channel_mean, channel_std and channel_histograms must have one entry per channel"
            )
        if len({len(h) for h in self.channel_histograms}) > 1:
            raise ValueError("every channel histogram must have the same number of bins")
        if any(std < 0 for std in self.channel_std):
            raise ValueError("channel_std must not be negative")
        if self.outside_reference > self.samples:
            raise ValueError("outside_reference cannot exceed samples")


class CapturePolicy(Strict, frozen=True, kw_only=True):
    """Which inputs a device keeps as hard examples, and how many.

    The reasons are independent triggers: an input is captured for the first that fires (in
    the order of :data:`CAPTURE_REASONS`). ``random`` is decided first and on its own, so the
    random samples stay an unbiased sample of what the device sees. None / empty / 0 turns a
    reason off. Budgets bound what a device stores and uploads, whatever fires."""

    low_confidence: (
        Annotated[Share, Meta(description="Capture when the top-1 score is below this.")] | None
    ) = None
    margin: (
        Annotated[Share, Meta(description="Capture when top-1 minus top-2 is below this.")] | None
    ) = None
    outside_reference: (
        Annotated[
            Share,
            Meta(
                description="Capture when the input's outside-reference score (the share of its "
                "values in reference bins with < 0.1 % mass or outside the edges) exceeds this."
            ),
        ]
        | None
    ) = None
    classes: Annotated[
        list[ClassKey],
        Meta(max_length=1000, description="Capture when the predicted class is one of these."),
    ] = field(default_factory=list)
    random: Annotated[
        Share, Meta(description="Fraction of all inputs captured at random (reason 'random').")
    ] = 0.0
    shadow_disagreement: Annotated[
        bool,
        Meta(
            description="Capture the inputs on which the shadow model disagrees with the "
            "serving one (see edgefleet.contract.shadow for what disagrees per task)."
        ),
    ] = False
    max_per_hour: Annotated[
        int, Meta(ge=0, le=1_000_000, description="Samples captured per rolling hour, at most.")
    ] = 60
    max_per_day: Annotated[
        int, Meta(ge=0, le=10_000_000, description="Samples captured per rolling day, at most.")
    ] = 500
    max_bytes_per_day: Annotated[
        int, Meta(ge=0, le=2**40, description="Bytes of sample content per rolling day, at most.")
    ] = 50_000_000
    max_side: Annotated[
        int, Meta(ge=16, le=8192, description="Longest image side in pixels (resized down).")
    ] = 640
    jpeg_quality: Annotated[
        int, Meta(ge=1, le=100, description="JPEG quality of captured images.")
    ] = 85

    def tightened(self, other: CapturePolicy) -> CapturePolicy:
        """The stricter combination of two policies: what both allow, never more than either.

        A reason stays on only if both turn it on, with the stricter threshold; ``classes`` is
        the intersection (in this policy's order); every budget is the smaller."""
        return CapturePolicy(
            low_confidence=_both(self.low_confidence, other.low_confidence, min),
            margin=_both(self.margin, other.margin, min),
            outside_reference=_both(self.outside_reference, other.outside_reference, max),
            classes=[c for c in self.classes if c in set(other.classes)],
            random=min(self.random, other.random),
            shadow_disagreement=self.shadow_disagreement and other.shadow_disagreement,
            max_per_hour=min(self.max_per_hour, other.max_per_hour),
            max_per_day=min(self.max_per_day, other.max_per_day),
            max_bytes_per_day=min(self.max_bytes_per_day, other.max_bytes_per_day),
            max_side=min(self.max_side, other.max_side),
            jpeg_quality=min(self.jpeg_quality, other.jpeg_quality),
        )


def _both(a: float | None, b: float | None, pick: Callable[[float, float], float]) -> float | None:
    return None if a is None or b is None else pick(a, b)


class SampleMeta(Strict, frozen=True, kw_only=True):
    """The metadata sent with one uploaded sample (part ``meta`` of ``POST /api/v1/samples``)."""

    schema_version: Annotated[
        Literal[2, 3], Meta(description="Contract schema version (SampleMeta is unchanged in 3).")
    ] = SCHEMA_VERSION
    sample_id: Annotated[
        str,
        Meta(
            pattern=SAMPLE_ID_PATTERN,
            description="Device-generated id, 8..64 of [A-Za-z0-9_-]: the idempotency key "
            "(a replay of the same device + sample_id stores nothing new).",
        ),
    ]
    device_id: DeviceId
    model: Annotated[ModelRef, Meta(description="The model version that saw the input.")]
    captured_at: Annotated[AwareDatetime, Meta(description="When the input was captured.")]
    reason: Annotated[CaptureReason, Meta(description="Which policy rule captured it.")]
    confidence: Annotated[Share, Meta(description="Top-1 score.")] | None = None
    margin: Annotated[Share, Meta(description="Top-1 minus top-2 score.")] | None = None
    predicted: Annotated[ClassKey, Meta(description="Top-1 label or class index.")] | None = None
    outputs: Annotated[
        list[float],
        Meta(max_length=1000, description="Top-k scores or the raw output head, truncated."),
    ] = field(default_factory=list)
    input_score: (
        Annotated[Share, Meta(description="The input's outside-reference score.")] | None
    ) = None
    input_stats: Annotated[InputStats, Meta(description="Statistics of this one input.")] | None = (
        None
    )
    content_type: Annotated[SampleContentType, Meta(description="Media type of the content.")]
    sha256: Annotated[Sha256Hex, Meta(description="SHA-256 of the content.")]
    size: Annotated[int, Meta(ge=1, le=2**31, description="Bytes of the content.")]
