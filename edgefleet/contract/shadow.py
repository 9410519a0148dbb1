"""A shadow model on a device (schema version 3): what the server asks for and what comes back.

* :class:`ShadowSpec` — ``DesiredState.shadow``: a second model version the device downloads and
  verifies exactly like a serving one, loads beside it and runs on a sampled share of the same
  preprocessed inputs, within a CPU budget, never sending its outputs anywhere.
* :class:`ShadowReport` — ``Telemetry.shadow``: per telemetry interval, paired figures of the
  serving and the shadow model *on the same inputs* (latency, thread CPU time, agreement).

Agreement per task (the agent's ``agent/shadow/measures.py`` owns the computation):

=============== ============================================ ===================================
task            figures                                      one paired input agrees when
=============== ============================================ ===================================
classification  ``mean_abs_conf_delta`` (top-1 score delta)  the same top-1 class
detection       ``box_f1`` (matched boxes at IoU 0.5)        box F1 ≥ :data:`AGREE_BOX_F1`
segmentation    ``mask_iou`` (mean IoU over classes present) IoU ≥ :data:`AGREE_MASK_IOU`
raw             ``max_abs_diff``, ``mean_abs_diff``          max |Δ| ≤ :data:`AGREE_RAW_ABS`
=============== ============================================ ===================================
"""

from __future__ import annotations

from typing import Annotated, Final

from msgspec import Meta, field

from edgefleet.contract.common import DesiredModel, ModelRef, Strict
from edgefleet.contract.manifest import Task

__all__ = [
    "AGREE_BOX_F1",
    "AGREE_MASK_IOU",
    "AGREE_RAW_ABS",
    "ShadowReport",
    "ShadowSpec",
]

#: A detector's paired input agrees when its matched-box F1 (IoU ≥ 0.5, same class) is at least
#: this.
AGREE_BOX_F1: Final = 0.8
#: A segmenter's paired input agrees when its mean per-class mask IoU is at least this.
AGREE_MASK_IOU: Final = 0.9
#: A raw model's paired input agrees when no output element differs by more than this.
AGREE_RAW_ABS: Final = 1e-3

_Count = Annotated[int, Meta(ge=0, le=2**53)]
_Share = Annotated[float, Meta(ge=0, le=1)]
_Ms = Annotated[float, Meta(ge=0, le=86_400_000)]


class ShadowSpec(DesiredModel, frozen=True, kw_only=True):
    """The shadow model a device runs beside the serving one: where its bundle is and how to
    check it (the fields of :class:`DesiredModel`), plus how much of the device it may use."""

    sample_rate: Annotated[
        float,
        Meta(
            gt=0,
            le=1,
            description="Share of the served inputs also offered to the shadow model.",
        ),
    ] = 0.1
    cpu_budget: Annotated[
        float,
        Meta(
            gt=0,
            le=1,
            description="Thread CPU time the shadow may use, as a fraction of one core; "
            "inputs arriving while it is over are skipped.",
        ),
    ] = 0.25


class ShadowReport(Strict, frozen=True, kw_only=True):
    """The shadow model's interval: paired figures on the same inputs as the serving model.

    Latencies and CPU times are measured on the shadow worker for the shadow and on the
    inference thread for the serving model, per paired input; CPU time (``time.thread_time``)
    is the honest basis on a busy device, where wall time also counts waiting for a core."""

    model: Annotated[ModelRef, Meta(description="The shadow model version.")]
    task: Annotated[Task, Meta(description="The shadow model's task.")] | None = None
    paired: Annotated[_Count, Meta(description="Inputs both models ran on in the interval.")]
    skipped: Annotated[
        _Count,
        Meta(description="Sampled inputs not run: the worker was busy or over its CPU budget."),
    ] = 0
    disagreements: Annotated[
        _Count, Meta(description="Paired inputs on which the two models disagreed.")
    ] = 0
    agreement: (
        Annotated[_Share, Meta(description="Share of paired inputs that agreed (None: none).")]
        | None
    ) = None
    serving_p50_ms: Annotated[_Ms, Meta(description="Serving latency, median.")] | None = None
    serving_p95_ms: Annotated[_Ms, Meta(description="Serving latency, 95th pct.")] | None = None
    shadow_p50_ms: Annotated[_Ms, Meta(description="Shadow latency, median.")] | None = None
    shadow_p95_ms: Annotated[_Ms, Meta(description="Shadow latency, 95th pct.")] | None = None
    serving_cpu_ms: Annotated[
        _Ms, Meta(description="Serving thread CPU time over the paired inputs.")
    ] = 0.0
    shadow_cpu_ms: Annotated[
        _Ms, Meta(description="Shadow thread CPU time over the paired inputs.")
    ] = 0.0
    mean_abs_conf_delta: (
        Annotated[_Share, Meta(description="Classifiers: mean |top-1 score delta|.")] | None
    ) = None
    box_f1: (
        Annotated[_Share, Meta(description="Detectors: mean matched-box F1 at IoU 0.5.")] | None
    ) = None
    mask_iou: Annotated[_Share, Meta(description="Segmenters: mean mask IoU.")] | None = None
    max_abs_diff: (
        Annotated[float, Meta(ge=0, description="Raw: largest |output delta|.")] | None
    ) = None
    mean_abs_diff: Annotated[float, Meta(ge=0, description="Raw: mean |output delta|.")] | None = (
        None
    )
    errors: Annotated[
        dict[str, _Count],
        Meta(max_length=32, description="Shadow failures by kind (load_failed, inference, ...)."),
    ] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.disagreements > self.paired:
            raise ValueError("disagreements cannot exceed paired")
        if self.paired == 0 and self.agreement is not None:
            raise ValueError("agreement needs at least one paired input")
        for low, high in (
            (self.serving_p50_ms, self.serving_p95_ms),
            (self.shadow_p50_ms, self.shadow_p95_ms),
        ):
            if low is not None and high is not None and low > high:
                raise ValueError("a p50 latency cannot exceed its p95")
