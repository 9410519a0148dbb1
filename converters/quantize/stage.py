"""The converter's quantization stage: open the calibration set, pick the rows to validate on,
run the pipeline, and hand back what the artifact needs (model, specs, stats, checks)."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.calibration import CalibrationSet, open_calibration
from converters.errors import InputError, one_line
from converters.evaldata import EvalSet, batch_of
from converters.options import ConvertOptions, ConvertTask
from converters.quantize.candidates import Target, host_target
from converters.quantize.configs import DynamicInt8, Fp16, StaticInt8
from converters.quantize.pipeline import QuantInput, QuantOutcome, run_quantization
from converters.quantize.task_metrics import TaskDecode
from converters.runtime import run_batched
from converters.stats import class_index, streaming_reference_stats
from converters.validators import CheckResult
from converters.value_range import raw_pixel_warnings
from edgefleet.contract import TensorSpec
from edgefleet.contract.manifest import ReferenceStats

if TYPE_CHECKING:
    from onnx import ModelProto


@dataclass(frozen=True)
class QuantStage:
    outcome: QuantOutcome
    calibration: CalibrationSet
    feeds: dict[str, Any]
    eval_source: str

    @property
    def config(self) -> StaticInt8 | DynamicInt8 | Fp16 | None:
        return self.outcome.config

    def check(self) -> CheckResult:
        """The pipeline's outcome as a validator result in ``report.json``'s checks."""
        r = self.outcome.report
        chosen = next(c for c in r.candidates if c.name == r.chosen)
        values: dict[str, float | int | str] = {
            "chosen": r.chosen,
            "metric": r.metric,
            "baseline": r.baseline_metric,
            "value": self.outcome.metric,
            "drop": r.baseline_metric - self.outcome.metric,
            "candidates": len(r.candidates) - 1,
        }
        if r.metric == "top1":
            values["top1"] = self.outcome.metric
        if chosen.speedup is not None:
            values["speedup"] = chosen.speedup
        if chosen.size_ratio is not None:
            values["size_ratio"] = chosen.size_ratio
        return CheckResult(
            name="quantized",
            passed=True,
            message=f"{r.chosen}: {r.metric} {self.outcome.metric:.4f} "
            f"(fp32 {r.baseline_metric:.4f}) on {r.eval_rows} {r.eval_source} rows",
            values=values,
        )


class Progress:
    """Phase lines on stderr, each with the time since the conversion started; per-node detail
    lines only when verbose. Called like a function for a phase line."""

    def __init__(self, enabled: bool, *, verbose: bool = False) -> None:
        self.enabled, self.verbose = enabled, verbose and enabled
        self.started = time.monotonic()

    def __call__(self, line: str) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self.started
            sys.stderr.write(f"edgefleet convert: [{elapsed:5.0f} s] {line}\n")
            sys.stderr.flush()

    def detail(self, line: str) -> None:
        if self.verbose:
            self(f"  {line}")


def progress_printer(enabled: bool, *, verbose: bool = False) -> Progress:
    return Progress(enabled, verbose=verbose)


def resolve_target(options: ConvertOptions) -> Target:
    if options.target is None:
        return host_target()
    from firmware_configs.profile import ProfileError, load_profile

    try:
        profile = load_profile(options.target)
    except ProfileError as err:
        raise InputError(f"--target: {one_line(err)}") from err
    return Target(name=profile.name, arch=profile.arch, int8_fast=profile.int8_fast)


def calibration_rows(calib: CalibrationSet, limit: int) -> tuple[dict[str, Any], Any | None]:
    """The first ``limit`` calibration rows (and labels) in memory, for validation."""
    import numpy as np

    parts = list(calib.batches(limit=limit))
    feeds = {k: np.concatenate([p.inputs[k] for p in parts]) for k in parts[0].inputs}
    labels = None
    if calib.has_labels and all(p.labels is not None for p in parts):
        labels = np.concatenate([p.labels for p in parts])
    return feeds, labels


def quantize_stage(
    *,
    model: ModelProto,
    session: Any,
    inputs: list[TensorSpec],
    feeds: dict[str, Any],
    onnx_out: dict[str, Any],
    eval_set: EvalSet | None,
    labels: list[str],
    class_values: Any | None,
    task: ConvertTask,
    options: ConvertOptions,
    decode: TaskDecode | None = None,
) -> QuantStage:
    """Run the pipeline on the eval rows (or, without --eval, on calibration rows)."""
    assert options.calibration is not None  # checked by the caller
    progress = progress_printer(options.progress, verbose=options.verbose)
    target = resolve_target(options)
    calib = open_calibration(
        options.calibration,
        inputs=inputs,
        preprocessing=options.preprocessing,
        labels=labels or None,
    )
    warnings: list[str] = []
    if calib.kind == "npz":
        first = next(calib.batches(limit=256), None)
        evaluation = feeds if eval_set is not None else None
        for line in raw_pixel_warnings(first.inputs if first else {}, evaluation=evaluation):
            progress(f"warning: {line}")
            warnings.append(line)
    if eval_set is not None:
        q_feeds, q_labels, source, reference = feeds, eval_set.labels, "eval", onnx_out
    else:
        q_feeds, q_labels = calibration_rows(calib, options.max_eval_rows)
        source = "calibration"
        reference = run_batched(session, q_feeds, batch=batch_of(inputs))
    with tempfile.TemporaryDirectory(prefix="edgefleet-quant-") as work:
        outcome = run_quantization(
            QuantInput(
                model=model,
                feeds=q_feeds,
                reference=reference,
                labels=q_labels,
                class_values=class_values,
                task=task,
                calibration=calib,
                eval_source=source,
                options=options,
                target=target,
                work=Path(work),
                progress=progress,
                detail=progress.detail,
                decode=decode,
            )
        )
    outcome.report.notes.extend(warnings)
    return QuantStage(outcome=outcome, calibration=calib, feeds=q_feeds, eval_source=source)


def calibration_stats(
    stage: QuantStage,
    session: Any,
    *,
    batch: int | None,
    layout: str | None,
    n_classes: int | None,
    classify: bool,
) -> ReferenceStats:
    """Reference statistics over the calibration set, streamed; classes from the chosen model."""
    limit = stage.calibration.samples

    def batches() -> Any:
        return (b.inputs for b in stage.calibration.batches(limit=limit))

    def predict(feeds: dict[str, Any]) -> Any | None:
        return class_index(run_batched(session, feeds, batch=batch))

    return streaming_reference_stats(
        batches, layout=layout, predict=predict if classify else None, n_classes=n_classes
    )
