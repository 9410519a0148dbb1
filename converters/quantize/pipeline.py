"""The quantization pipeline: normalise → probe → candidates → validate (+ budget loop) → gate.

:func:`run_quantization` returns the chosen model (an int8/fp16 candidate, or the normalised
fp32 model) and a :class:`QuantizationReport` holding every candidate with its numbers.

Pruned early, so a conversion is something a person can sit through (issue #12):
1. every planned candidate is built from a 2-row calibration and timed against fixed-shape fp32
   in a short paired probe (:mod:`converters.quantize.probe`); one not faster on this host is
   dropped before it is calibrated in full or validated;
2. the rest are validated fastest first; once one is within budget, a candidate whose probe was
   clearly slower than it cannot win and is not validated (``pruned``);
3. static int8 calibrates once per range estimator (the ranges are cached and reused by every
   format and every budget-loop step); entropy/percentile run only for a candidate MinMax
   leaves outside the budget;
4. the gate's calls per round follow the model's speed (:func:`probe.round_runs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.calibration import CalibrationSet
from converters.errors import ConvertError, InputError, one_line
from converters.evaldata import batch_of, check_rows, take_rows
from converters.onnx_graph import tensor_specs
from converters.options import ConvertOptions, ConvertTask
from converters.quantize import metrics
from converters.quantize.candidates import Target, op_mix, plan_candidates
from converters.quantize.configs import DynamicInt8, Fp16, StaticInt8, config_name
from converters.quantize.engines import QuantizeError, fp16_available
from converters.quantize.gate import benchmark, choose_confirmed, gate, interval_rank
from converters.quantize.normalise import normalise
from converters.quantize.probe import (
    GATE_ROUND_S,
    ProbeResult,
    call_ms,
    cannot_win,
    probe,
    round_runs,
)
from converters.quantize.report import CandidateReport, QuantizationReport
from converters.quantize.search import Built, Search
from converters.quantize.task_metrics import TaskDecode
from converters.runtime import make_session

if TYPE_CHECKING:
    from onnx import ModelProto

Config = StaticInt8 | DynamicInt8 | Fp16
FP32 = "fp32"


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
class _Phases:
    """Seconds per pipeline phase, for report.json (where a slow conversion spent its time)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter)

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._mark, 3)
        self._mark = now


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


def _probe_stage(
    q: QuantInput,
    search: Search,
    configs: list[Config],
    shipped_fp32: bytes,
    feed: dict[str, Any],
    skipped: dict[str, str],
) -> tuple[list[tuple[Config, Path]], list[CandidateReport], ProbeResult | None, float]:
    """Build every planned candidate cheaply and time it against fp32; the ones still worth
    validating (fastest first), a report for each one dropped, the probe, fp32's ms a call."""
    reports: list[CandidateReport] = []
    built: list[tuple[Config, Path]] = []
    threads = q.options.gate_threads
    sessions: dict[str, Any] = {FP32: make_session(shipped_fp32, threads=threads)}
    for index, config in enumerate(configs):
        name = config_name(config)
        if search.out_of_time():
            for late in configs[index:]:
                skipped[config_name(late)] = (
                    f"--time-budget {q.options.time_budget_s:g} s reached before it was tried"
                )
            q.progress(f"time budget reached: {len(configs) - index} candidates not tried")
            break
        q.progress(f"probe {index + 1}/{len(configs)}: building {name}")
        started = time.perf_counter()
        try:
            path = search.build(config, f"probe-{index}", probe=True)
            sessions[name] = make_session(path.read_bytes(), threads=threads, what=name)
        except (QuantizeError, ConvertError) as err:
            reports.append(
                CandidateReport(
                    name=name,
                    config=config.model_dump(),
                    status="failed",
                    reason=f"could not build: {one_line(err, limit=200)}",
                    seconds=time.perf_counter() - started,
                )
            )
            continue
        built.append((config, path))
    fp32_ms = call_ms(sessions[FP32], feed)
    if not built:
        return [], reports, None, fp32_ms
    if not q.options.latency_probe:  # every candidate is validated, in plan order
        return built, reports, None, fp32_ms
    q.progress(f"latency probe: {len(built)} candidates against fp32 ({fp32_ms:.2f} ms a call)")
    result = probe(sessions, feed, baseline=FP32, fp32_ms=fp32_ms)
    live: list[tuple[Config, Path]] = []
    for config, path in built:
        name = config_name(config)
        why = result.why_dropped(name)
        if why is None:
            live.append((config, path))
            continue
        reports.append(
            CandidateReport(
                name=name,
                config=config.model_dump(),
                status="rejected",
                reason=why,
                probe_speedup=result.speedup[name],
                size_bytes=path.stat().st_size,
                size_ratio=search.fp32_size / max(path.stat().st_size, 1),
            )
        )
    live.sort(key=lambda item: result.ms[config_name(item[0])])
    return live, reports, result, fp32_ms


def _search_stage(
    q: QuantInput,
    search: Search,
    live: list[tuple[Config, Path]],
    result: ProbeResult | None,
    skipped: dict[str, str],
) -> tuple[list[Built], list[CandidateReport]]:
    """Validate the probe's survivors fastest first, skipping those that cannot win (all of
    them, in plan order, without a probe)."""
    built: list[Built] = []
    reports: list[CandidateReport] = []
    best_ms: float | None = None
    started = time.perf_counter()
    for index, (config, probe_path) in enumerate(live):
        name = config_name(config)
        if search.out_of_time():
            for late, _ in live[index:]:
                skipped[config_name(late)] = (
                    f"--time-budget {q.options.time_budget_s:g} s reached before it was tried"
                )
            q.progress(f"time budget reached: {len(live) - index} candidates not tried")
            break
        probe_ms = result.ms[name] if result is not None else None
        speedup = result.speedup[name] if result is not None else None
        why = cannot_win(probe_ms, best_ms) if probe_ms is not None else None
        if why is not None:
            reports.append(
                CandidateReport(
                    name=name,
                    config=config.model_dump(),
                    status="pruned",
                    reason=why,
                    probe_speedup=speedup,
                )
            )
            continue
        if index:
            left = (time.perf_counter() - started) / index * (len(live) - index)
            q.progress(f"candidate {index + 1}/{len(live)} (at most about {left:.0f} s left)")
        prebuilt = None if isinstance(config, StaticInt8) else probe_path
        for item in search.candidate(config, f"candidate-{index}", prebuilt=prebuilt):
            if isinstance(item, Built):
                item.report.probe_speedup = speedup
                built.append(item)
                reports.append(item.report)
                if item.report.status == "accepted" and probe_ms is not None:
                    best_ms = min(best_ms or probe_ms, probe_ms)
            else:
                reports.append(item)
    return built, reports


def _calibration_note(q: QuantInput, search: Search) -> list[str]:
    """Says so when static int8 calibrated on fewer rows than it was given (a large input)."""
    given = min(q.calibration.samples, q.options.calibration_rows)
    if search.calib_rows >= given:
        return []
    return [
        f"static int8 calibrated on {search.calib_rows} of {given} rows (large input; "
        "--calibration-rows N uses N)"
    ]


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


def _gate_stage(
    q: QuantInput,
    survivors: list[Built],
    shipped_fp32: bytes,
    feed: dict[str, Any],
    fp32_ms: float,
    fp32_report: CandidateReport,
) -> str | None:
    """Time the accepted candidates against fp32 (interleaved, then the winner alone); the
    chosen one's name, or None. Calls per round follow fp32's speed (at most the option's)."""
    opts = q.options
    runs = round_runs(fp32_ms, round_s=GATE_ROUND_S, most=opts.gate_runs_per_round)
    warmup = min(opts.latency_warmup, max(2, runs))
    threads = opts.gate_threads
    sessions = {FP32: make_session(shipped_fp32, threads=threads)}
    for b in survivors:
        sessions[b.report.name] = make_session(
            b.path.read_bytes(), threads=threads, what=b.report.name
        )
    q.progress(
        f"latency gate: {len(sessions)} models, {opts.gate_rounds} rounds of {runs} calls each"
    )
    timings = benchmark(
        sessions,
        feed,
        warmup=warmup,
        rounds=opts.gate_rounds,
        runs_per_round=runs,
        progress=q.progress,
        baseline=FP32,
        settle_rank=interval_rank(opts.gate_rounds),
    )
    latencies = {k: t.p50_ms for k, t in timings.items()}
    fp32_report.latency_ms_p50 = latencies[FP32]
    fp32_report.speedup = 1.0
    accepted: set[str] = set()
    for b in survivors:
        verdict = gate(timings[FP32], timings[b.report.name], min_speedup=opts.min_speedup)
        b.report.latency_ms_p50 = latencies[b.report.name]
        b.report.speedup = verdict.speedup
        if verdict.accepted:
            accepted.add(b.report.name)
            b.report.reason += f"; {verdict.reason}"
        else:
            b.report.status = "rejected"
            b.report.reason = f"latency gate: {verdict.reason}"
    if not accepted:
        return None
    q.progress("latency gate: confirming the fastest timed alone")
    chosen, refused = choose_confirmed(
        sessions,
        feed,
        latencies,
        accepted,
        baseline=FP32,
        warmup=warmup,
        runs=runs * 5,
    )
    for b in survivors:
        if b.report.name in refused:
            b.report.status = "rejected"
            b.report.reason = f"latency gate: {refused[b.report.name]}"
    return chosen


def run_quantization(q: QuantInput) -> QuantOutcome:
    """Probe, build, validate and time the candidates; return the chosen one (fp32 is one)."""
    phases = _Phases()
    q.progress(f"normalising the fp32 model (calibration: {q.calibration.samples} rows)")
    # Checked on the first rows of a big input (see converters.evaldata.check_rows).
    total = len(next(iter(q.feeds.values())))
    checked = check_rows(q.feeds, batch=batch_of(tensor_specs(q.model)[0]), outputs=q.reference)
    fp32 = normalise(
        q.model,
        shapes=q.options.input_shapes,
        rows=_row_shapes(q.calibration),
        check_feeds=take_rows(q.feeds, 0, checked),
        reference=take_rows(q.reference, 0, checked),
        work=q.work,
    )
    _name_nodes(fp32.model)
    fp32.path.write_bytes(fp32.model.SerializeToString())
    # The fp32 that ships (and that candidates must beat) is the model as given, dims fixed,
    # not the normalised one: the opset 11 → 17 upgrade made a real YOLOX detector 6-10 %
    # slower here (82 vs 90 ms a call, fastest of 3 fresh sessions); only per-channel QDQ
    # needs it. The normalised model is checked to compute the same outputs.
    shipped_fp32 = q.model.SerializeToString()
    # The normalised model's outputs when it ran on every row, else the shipped fp32's.
    full = fp32.outputs is not None and checked == total
    fp32_out = fp32.outputs if full and fp32.outputs is not None else dict(q.reference)
    search = Search(q, fp32, fp32_out)
    phases.done("normalise")

    plan = plan_candidates(
        op_mix(fp32.model),
        mode=q.options.quantize_mode,
        target=q.target,
        per_channel_ok=fp32.per_channel_ok,
        fp16_problem=fp16_available(),
    )
    for method in q.options.calibration_methods:
        if method != "minmax":
            plan.skipped.setdefault(
                f"int8-{method}", "tried only for a candidate MinMax leaves outside the budget"
            )
    feed = _deploy_feed(q, fp32.model)
    built: list[Built] = []
    reports: list[CandidateReport] = []
    fp32_ms = 0.0
    if plan.configs:
        live, reports, result, fp32_ms = _probe_stage(
            q, search, plan.configs, shipped_fp32, feed, plan.skipped
        )
        phases.done("probe")
        built, more = _search_stage(q, search, live, result, plan.skipped)
        reports += more
        phases.done("candidates")

    survivors = [b for b in built if b.report.status == "accepted"]
    fp32_report = CandidateReport(
        name=FP32,
        config={},
        status="accepted",
        reason="baseline",
        metric=search.baseline,
        drop=0.0,
        fidelity=metrics.fidelity(search.fp32_out, search.fp32_out),
        size_bytes=search.fp32_size,
        size_ratio=1.0,
    )
    chosen_name: str | None = None
    if survivors:
        chosen_name = _gate_stage(q, survivors, shipped_fp32, feed, fp32_ms, fp32_report)
        phases.done("gate")
    mode = q.options.quantize_mode
    if chosen_name is None:
        best = min(
            (r for r in reports if r.drop is not None),
            key=lambda r: r.drop if r.drop is not None else 1.0,
            default=None,
        )
        if best is None:
            best = next((r for r in reports if r.status == "rejected"), None)
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
        metric=search.metric_name,
        baseline_metric=search.baseline,
        eval_rows=len(next(iter(q.feeds.values()))),
        eval_source="eval" if q.eval_source == "eval" else "calibration",
        calibration_file=q.calibration.path.name,
        calibration_kind=q.calibration.kind,
        calibration_samples=search.calib_rows,
        calibration_sha256=q.calibration.sha256,
        threads=q.options.gate_threads,
        host_load=_load_average(),
        normalisation=fp32.steps,
        notes=[*fp32.notes, *_calibration_note(q, search)],
        skipped=plan.skipped,
        candidates=[fp32_report, *reports],
        chosen=chosen_name,
        phases_s=phases.seconds,
    )
    if chosen is None:
        return QuantOutcome(shipped_fp32, None, search.fp32_out, search.baseline, report)
    return QuantOutcome(
        chosen.path.read_bytes(), chosen.config, chosen.outputs, chosen.metric, report
    )


def require_calibration(options: ConvertOptions) -> None:
    if options.quantize_mode != "none" and options.calibration is None:
        raise InputError(f"--quantize {options.quantize_mode} needs --calibration DATA")
