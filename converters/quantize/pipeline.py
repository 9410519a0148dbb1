"""The quantization pipeline: normalise → candidates → validate (+ budget loop) → latency gate.

:func:`run_quantization` returns the chosen model (an int8/fp16 candidate, or the normalised
fp32 model) and a :class:`QuantizationReport` holding every candidate with its numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.calibration import CalibrationSet
from converters.errors import ConvertError, InputError, one_line
from converters.evaldata import batch_of
from converters.onnx_graph import tensor_specs
from converters.options import ConvertOptions, ConvertTask
from converters.quantize import metrics
from converters.quantize.candidates import (
    Target,
    op_mix,
    plan_candidates,
)
from converters.quantize.configs import DynamicInt8, Fp16, StaticInt8, config_name
from converters.quantize.engines import INT8_OPS, QuantizeError, fp16_available, quantize
from converters.quantize.gate import benchmark, choose_confirmed, gate
from converters.quantize.normalise import Normalised, normalise
from converters.quantize.ranking import TensorRisk, rank_tensors
from converters.quantize.report import BudgetStep, CandidateReport, QuantizationReport
from converters.quantize.task_metrics import TaskDecode
from converters.runtime import make_session, run_batched

if TYPE_CHECKING:
    from onnx import ModelProto

Config = StaticInt8 | DynamicInt8 | Fp16
FP32 = "fp32"
#: Input elements the ranking probe runs at most (rows x row size).
MAX_RANKING_ELEMENTS = 3_000_000


@dataclass(frozen=True)
class QuantInput:
    """Everything the pipeline needs; ``reference`` is the original fp32 model on ``feeds``."""

    model: ModelProto
    feeds: dict[str, Any]
    reference: dict[str, Any]
    labels: Any | None
    class_values: Any | None
    task: ConvertTask
    calibration: CalibrationSet
    eval_source: str
    options: ConvertOptions
    target: Target
    work: Path
    progress: Callable[[str], None]
    #: Per-node lines (the budget loop's steps): shown only with --verbose.
    detail: Callable[[str], None] = lambda _line: None
    #: A detector's or segmenter's recorded layout: the budget measure is box F1 / mask IoU.
    decode: TaskDecode | None = None


@dataclass(frozen=True)
class QuantOutcome:
    model_bytes: bytes
    config: Config | None
    outputs: dict[str, Any]
    metric: float
    report: QuantizationReport


@dataclass
class _Built:
    config: Config
    path: Path
    outputs: dict[str, Any]
    metric: float
    report: CandidateReport


def _name_nodes(model: ModelProto) -> None:
    """Nodes without a name cannot be excluded from quantization: name them."""
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _row_shapes(calib: CalibrationSet) -> dict[str, list[int]]:
    first = next(calib.batches(limit=1))
    return {name: list(value.shape[1:]) for name, value in first.inputs.items()}


class _Runner:
    def __init__(self, q: QuantInput, fp32: Normalised, fp32_out: dict[str, Any]) -> None:
        self.q = q
        self.fp32 = fp32
        self.fp32_out = fp32_out
        self.metric_name = metrics.metric_name(q.labels, fp32_out, q.task, q.decode)
        self.baseline = self.score(fp32_out)
        self.fp32_size = fp32.path.stat().st_size
        self._ranking: list[TensorRisk] | None = None
        self.calib_rows = q.options.calibration_rows
        self.search_started = time.perf_counter()

    def score(self, outputs: Mapping[str, Any]) -> float:
        return metrics.score(
            self.metric_name,
            outputs,
            self.fp32_out,
            labels=self.q.labels,
            class_values=self.q.class_values,
            decode=self.q.decode,
        )

    def evaluate(self, path: Path) -> dict[str, Any]:
        model_bytes = path.read_bytes()
        session = make_session(model_bytes, what=path.name)
        inputs, _ = tensor_specs(_load(path))
        return run_batched(session, self.q.feeds, batch=batch_of(inputs), what=path.name)

    def build(self, config: Config, index: int) -> tuple[Path, dict[str, Any], float]:
        target = self.q.work / f"candidate-{index}.onnx"
        quantize(
            config,
            source=self.fp32.path,
            target=target,
            calibration=lambda: self.q.calibration.reader(limit=self.calib_rows),
        )
        outputs = self.evaluate(target)
        return target, outputs, self.score(outputs)

    def ranking(self) -> list[TensorRisk]:
        if self._ranking is None:
            rows = next(self.q.calibration.batches(limit=self._ranking_rows())).inputs
            self._ranking = rank_tensors(self.fp32.model, rows, op_types=INT8_OPS)
        return self._ranking

    def _ranking_rows(self) -> int:
        """Rows the ranking probe runs: every inner tensor of each row is kept in memory, so a
        big input gets few rows (an 800x608 layout detector: 2; a 48x192 text line: 64)."""
        first = next(self.q.calibration.batches(limit=1)).inputs
        per_row = sum(int(v[0].size) for v in first.values()) or 1
        return max(1, min(self.calib_rows, 64, MAX_RANKING_ELEMENTS // per_row))

    def out_of_time(self) -> bool:
        """True once the search has used up ``--time-budget`` (never without one)."""
        budget = self.q.options.time_budget_s
        return budget is not None and time.perf_counter() - self.search_started >= budget

    def candidate(self, config: Config, index: int) -> _Built | CandidateReport:
        started = time.perf_counter()
        name = config_name(config)
        self.q.progress(f"calibrating and quantizing {name}")
        try:
            path, outputs, value = self.build(config, index)
        except (QuantizeError, ConvertError) as err:
            return CandidateReport(
                name=name,
                config=config.model_dump(),
                status="failed",
                reason=f"could not build: {one_line(err, limit=200)}",
                seconds=time.perf_counter() - started,
            )
        steps: list[BudgetStep] = []
        budget = self.q.options.max_drop
        if self.baseline - value > budget and not isinstance(config, Fp16):
            config, path, outputs, value = self._budget_loop(config, index, value, steps)
        drop = self.baseline - value
        report = CandidateReport(
            name=config_name(config),
            config=config.model_dump(),
            status="accepted" if drop <= budget else "rejected",
            reason=(
                f"{self.metric_name} drop {drop:.4f} within budget {budget}"
                if drop <= budget
                else f"{self.metric_name} drop {drop:.4f} exceeds budget {budget}"
                + (f" even with {len(steps)} exclusion steps" if steps else "")
            ),
            metric=value,
            drop=drop,
            fidelity=metrics.fidelity(outputs, self.fp32_out),
            size_bytes=path.stat().st_size,
            size_ratio=self.fp32_size / max(path.stat().st_size, 1),
            excluded_nodes=list(getattr(config, "excluded_nodes", ())),
            budget_steps=steps,
            seconds=time.perf_counter() - started,
        )
        return _Built(config, path, outputs, value, report)

    def _budget_loop(
        self, config: StaticInt8 | DynamicInt8, index: int, value: float, steps: list[BudgetStep]
    ) -> tuple[Config, Path, dict[str, Any], float]:
        """Leave the worst tensors' nodes in float, one at a time, until within budget."""
        best: tuple[Config, Path, dict[str, Any], float] | None = None
        excluded: set[str] = set(config.excluded_nodes)
        budget = self.q.options.max_drop
        for risk in self.ranking():
            if len(steps) >= self.q.options.max_exclusion_steps or self.out_of_time():
                break
            if not risk.nodes or set(risk.nodes) <= excluded:
                continue
            excluded |= set(risk.nodes)
            trial = config.model_copy(update={"excluded_nodes": tuple(sorted(excluded))})
            self.q.detail(f"budget loop: sparing {risk.tensor} ({config_name(trial)})")
            step = BudgetStep(
                excluded_tensor=risk.tensor,
                tensor_error=risk.error,
                excluded_nodes=sorted(excluded),
            )
            steps.append(step)
            try:
                path, outputs, trial_value = self.build(trial, index * 100 + len(steps))
            except (QuantizeError, ConvertError):
                continue
            step.drop = self.baseline - trial_value
            if best is None or trial_value > best[3]:
                best = (trial, path, outputs, trial_value)
            if self.baseline - trial_value <= budget:
                return trial, path, outputs, trial_value
        if best is not None and best[3] > value:
            return best
        path = self.q.work / f"candidate-{index}.onnx"
        # The untouched candidate stays the record when no step helped.
        return config, path, self.evaluate(path), value


def _load(path: Path) -> ModelProto:
    import onnx

    return onnx.load(str(path))


def _load_average() -> float | None:
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _deploy_feed(q: QuantInput, model: ModelProto) -> dict[str, Any]:
    inputs, _ = tensor_specs(model)
    batch = batch_of(inputs) or 1
    given = q.options.input_shapes.get(inputs[0].name)
    if given and batch_of(inputs) is None:
        batch = given[0]
    return {k: v[:batch] for k, v in q.feeds.items()}


def run_quantization(q: QuantInput) -> QuantOutcome:
    """Build, validate and time every candidate; return the chosen one (fp32 is a candidate)."""
    search_started = time.perf_counter()
    q.progress(f"normalising the fp32 model (calibration: {q.calibration.samples} rows)")
    fp32 = normalise(
        q.model,
        shapes=q.options.input_shapes,
        rows=_row_shapes(q.calibration),
        check_feeds=q.feeds,
        reference=q.reference,
        work=q.work,
    )
    _name_nodes(fp32.model)
    fp32.path.write_bytes(fp32.model.SerializeToString())
    # The fp32 that ships (and that candidates must beat) is the model as given, dims fixed,
    # not the normalised one: the opset 11 → 17 upgrade made a real YOLOX detector 6-10 %
    # slower here (82 vs 90 ms a call, fastest of 3 fresh sessions); only per-channel QDQ
    # needs it. The normalised model is checked to compute the same outputs.
    shipped_fp32 = q.model.SerializeToString()
    runner = _Runner(q, fp32, {})
    runner.search_started = search_started
    runner.fp32_out = runner.evaluate(fp32.path)
    runner.metric_name = metrics.metric_name(q.labels, runner.fp32_out, q.task, q.decode)
    runner.baseline = runner.score(runner.fp32_out)

    plan = plan_candidates(
        op_mix(fp32.model),
        mode=q.options.quantize_mode,
        target=q.target,
        per_channel_ok=fp32.per_channel_ok,
        methods=tuple(q.options.calibration_methods),
        fp16_problem=fp16_available(),
    )
    built: list[_Built] = []
    reports: list[CandidateReport] = []
    started = time.perf_counter()
    for index, config in enumerate(plan.configs):
        if runner.out_of_time():
            for late in plan.configs[index:]:
                plan.skipped[config_name(late)] = (
                    f"--time-budget {q.options.time_budget_s:g} s reached before it was tried"
                )
            q.progress(f"time budget reached: {len(plan.configs) - index} candidates not tried")
            break
        if index:
            left = (time.perf_counter() - started) / index * (len(plan.configs) - index)
            q.progress(f"candidate {index + 1}/{len(plan.configs)} (about {left:.0f} s left)")
        result = runner.candidate(config, index)
        if isinstance(result, _Built):
            built.append(result)
            reports.append(result.report)
        else:
            reports.append(result)

    survivors = [b for b in built if b.report.status == "accepted"]
    fp32_report = CandidateReport(
        name=FP32,
        config={},
        status="accepted",
        reason="baseline",
        metric=runner.baseline,
        drop=0.0,
        fidelity=metrics.fidelity(runner.fp32_out, runner.fp32_out),
        size_bytes=runner.fp32_size,
        size_ratio=1.0,
    )
    latencies: dict[str, float] = {}
    accepted: set[str] = {FP32}
    if survivors:
        sessions = {FP32: make_session(shipped_fp32, threads=q.options.gate_threads)}
        for b in survivors:
            sessions[b.report.name] = make_session(
                b.path.read_bytes(), threads=q.options.gate_threads, what=b.report.name
            )
        q.progress(f"latency gate: {len(sessions)} models, {q.options.gate_rounds} rounds")
        timings = benchmark(
            sessions,
            _deploy_feed(q, fp32.model),
            warmup=q.options.latency_warmup,
            rounds=q.options.gate_rounds,
            runs_per_round=q.options.gate_runs_per_round,
            progress=q.progress,
        )
        latencies = {k: t.p50_ms for k, t in timings.items()}
        fp32_report.latency_ms_p50 = latencies[FP32]
        fp32_report.speedup = 1.0
        for b in survivors:
            verdict = gate(timings[FP32], timings[b.report.name], min_speedup=q.options.min_speedup)
            b.report.latency_ms_p50 = latencies[b.report.name]
            b.report.speedup = verdict.speedup
            if verdict.accepted:
                accepted.add(b.report.name)
                b.report.reason += f"; {verdict.reason}"
            else:
                b.report.status = "rejected"
                b.report.reason = f"latency gate: {verdict.reason}"
    quantized = accepted - {FP32}
    chosen_name: str | None = None
    if quantized:
        chosen_name, refused = choose_confirmed(
            sessions,
            _deploy_feed(q, fp32.model),
            latencies,
            quantized,
            baseline=FP32,
            warmup=q.options.latency_warmup,
            runs=q.options.gate_runs_per_round * 5,
        )
        for b in survivors:
            if b.report.name in refused:
                b.report.status = "rejected"
                b.report.reason = f"latency gate: {refused[b.report.name]}"
    mode = q.options.quantize_mode
    if chosen_name is None:
        best = min(
            (r for r in reports if r.drop is not None),
            key=lambda r: r.drop if r.drop is not None else 1.0,
            default=None,
        )
        why = best.reason if best is not None else "; ".join(plan.skipped.values()) or "none"
        if mode in ("int8", "fp16"):
            raise ConvertError(
                f"--quantize {mode}: no candidate is within --max-drop {q.options.max_drop} "
                f"and faster than fp32 (best: {best.name + ': ' if best else ''}{why})"
            )
        chosen_name = FP32
        fp32_report.reason = f"baseline; kept because no candidate qualified (best: {why})"[:500]
    chosen = next((b for b in survivors if b.report.name == chosen_name), None)
    for b in survivors:
        if b.report.name == chosen_name:
            b.report.status = "chosen"
    if chosen is None:
        fp32_report.status = "chosen"
    report = QuantizationReport(
        mode=mode,
        target=q.target.name,
        target_arch=q.target.arch,
        target_int8_fast=q.target.int8_fast,
        max_drop=q.options.max_drop,
        metric=runner.metric_name,
        baseline_metric=runner.baseline,
        eval_rows=len(next(iter(q.feeds.values()))),
        eval_source="eval" if q.eval_source == "eval" else "calibration",
        calibration_file=q.calibration.path.name,
        calibration_kind=q.calibration.kind,
        calibration_samples=min(q.calibration.samples, q.options.calibration_rows),
        calibration_sha256=q.calibration.sha256,
        threads=q.options.gate_threads,
        host_load=_load_average(),
        normalisation=fp32.steps,
        notes=fp32.notes,
        skipped=plan.skipped,
        candidates=[fp32_report, *reports],
        chosen=chosen_name,
    )
    if chosen is None:
        return QuantOutcome(shipped_fp32, None, runner.fp32_out, runner.baseline, report)
    return QuantOutcome(
        chosen.path.read_bytes(), chosen.config, chosen.outputs, chosen.metric, report
    )


def require_calibration(options: ConvertOptions) -> None:
    if options.quantize_mode != "none" and options.calibration is None:
        raise InputError(f"--quantize {options.quantize_mode} needs --calibration DATA")
