"""The quantization part of ``report.json``: every candidate with its numbers and verdict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: ``pruned``: never validated, because the latency probe showed it slower than a candidate
#: already accepted (it cannot win).
CandidateStatus = Literal["chosen", "accepted", "rejected", "failed", "pruned"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetStep(_Model):
    excluded_tensor: str = Field(description="The tensor spared from int8 at this step.")
    tensor_error: float = Field(description="Its simulated relative int8 error.")
    excluded_nodes: list[str] = Field(description="All nodes excluded after this step.")
    drop: float | None = Field(
        default=None,
        description="Metric drop after this step (the least it can be when eval_rows is set).",
    )
    eval_rows: int | None = Field(
        default=None,
        description="Set when validation stopped early: the rows it was decided on (even "
        "perfect remaining rows could not bring it within budget).",
    )
    restored: bool = Field(
        default=False,
        description="This step put the tensor's nodes back to int8 (a pruning pass after the "
        "budget was met: the step that spared it turned out not to be needed).",
    )


class CandidateReport(_Model):
    name: str = Field(description="Candidate label, e.g. int8-qdq-s8s8-pc-minmax.")
    config: dict[str, Any] = Field(description="The typed config (empty for fp32).")
    status: CandidateStatus = Field(description="Outcome.")
    reason: str = Field(description="Why accepted or rejected.")
    metric: float | None = Field(default=None, description="Budget metric on the eval rows.")
    drop: float | None = Field(
        default=None,
        description="fp32 metric minus this metric (the least it can be when eval_rows is set).",
    )
    eval_rows: int | None = Field(
        default=None,
        description="Set when validation stopped early: the rows the rejection was decided on "
        "(even if every other row agreed with fp32 it could not be within budget); metric is "
        "then the best it could have reached.",
    )
    fidelity: dict[str, float] = Field(
        default_factory=dict, description="max/mean abs error, cosine, argmax agreement vs fp32."
    )
    latency_ms_p50: float | None = Field(default=None, description="Interleaved median, ms.")
    speedup: float | None = Field(default=None, description="fp32 latency / this latency.")
    probe_speedup: float | None = Field(
        default=None,
        description="The short paired latency probe before validation: median fp32/this ratio "
        "(built from a 2-row calibration; ranges do not change speed).",
    )
    size_bytes: int | None = Field(default=None, description="Model file size.")
    size_ratio: float | None = Field(default=None, description="fp32 size / this size.")
    excluded_nodes: list[str] = Field(default_factory=list, description="Nodes kept in float.")
    float_ops: list[str] = Field(
        default_factory=list,
        description="The op type of each excluded node, in order (TFLite budget loop: "
        "FULLY_CONNECTED, CONV_2D, ...).",
    )
    budget_steps: list[BudgetStep] = Field(
        default_factory=list, description="The accuracy-budget loop, step by step."
    )
    seconds: float = Field(default=0.0, description="Time spent building and validating it.")


class QuantizationReport(_Model):
    mode: str = Field(description="--quantize.")
    target: str = Field(description="Profile the candidates were chosen for.")
    target_arch: str = Field(description="Its architecture.")
    target_int8_fast: bool = Field(description="Whether it has int8 dot-product instructions.")
    max_drop: float = Field(description="Accuracy budget.")
    metric: str = Field(description="top1 (labels), argmax_agreement or cosine (vs fp32).")
    baseline_metric: float = Field(description="The fp32 model's metric.")
    eval_rows: int = Field(description="Rows every candidate was validated on.")
    eval_source: Literal["eval", "calibration"] = Field(description="Where those rows came from.")
    calibration_file: str = Field(description="The calibration file or folder name.")
    calibration_kind: str = Field(description="npz or images.")
    calibration_samples: int = Field(description="Rows used for calibration.")
    calibration_sha256: str = Field(description="Hash of the calibration data.")
    threads: int = Field(description="Threads used by the latency gate.")
    host_load: float | None = Field(
        default=None, description="1-minute load average when the gate ran (noise context)."
    )
    measured_on: str = Field(
        default_factory=lambda: measured_here(),
        description="Where the latency gate timed the candidates: 'this host, <arch>'.",
    )
    normalisation: list[str] = Field(description="Steps applied to the fp32 model.")
    notes: list[str] = Field(default_factory=list, description="Dropped steps, fallbacks.")
    skipped: dict[str, str] = Field(default_factory=dict, description="Mode → why not tried.")
    candidates: list[CandidateReport] = Field(description="fp32 first, then every candidate.")
    chosen: str = Field(description="The candidate written as the artifact.")
    phases_s: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds per phase: normalise, probe, candidates (calibration, validation, "
        "budget loop), gate.",
    )


def measured_here() -> str:
    """The latency gate always runs on the converting host, whatever ``--target`` names."""
    import platform

    return f"this host, {platform.machine() or 'unknown arch'}"


def where_timed(report: QuantizationReport) -> str | None:
    """A warning line when ``--target`` names a device: the gate timed this host, not it."""
    if report.target == "host":
        return None
    return (
        f"  timed    on {report.measured_on}, not on {report.target} ({report.target_arch}): "
        "the choice is this host's; re-measure there with 'edgefleet agent bench'"
    )


def table(report: QuantizationReport) -> list[str]:
    """The candidates as an aligned text table."""
    lines = [
        f"  {'candidate':<34} {'status':<8} {report.metric:>10} {'drop':>8} {'p50 ms':>9} "
        f"{'speed':>6} {'KiB':>8}  reason"
    ]
    for c in report.candidates:
        metric = f"{c.metric:.4f}" if c.metric is not None else "-"
        drop = f"{c.drop:+.4f}" if c.drop is not None else "-"
        p50 = f"{c.latency_ms_p50:.4f}" if c.latency_ms_p50 is not None else "-"
        speed = f"{c.speedup:.2f}x" if c.speedup is not None else "-"
        size = f"{c.size_bytes / 1024:.1f}" if c.size_bytes is not None else "-"
        lines.append(
            f"  {c.name:<34} {c.status:<8} {metric:>10} {drop:>8} {p50:>9} {speed:>6} {size:>8}"
            f"  {c.reason[:80]}"
        )
    for mode, why in report.skipped.items():
        lines.append(f"  {mode:<34} skipped  {why[:100]}")
    return lines
