"""Keras → TFLite candidates through the accuracy budget and the latency gate (as for ONNX).

A full-int8 candidate over budget goes through the denylist loop
(:mod:`converters.tflite.denylist`): its worst layers stay float until it is within budget."""

from __future__ import annotations

import time
from typing import Any

from converters.calibration import CalibrationSet
from converters.errors import ConvertError, one_line
from converters.options import ConvertOptions
from converters.quantize import metrics
from converters.quantize.gate import benchmark, choose_confirmed, gate
from converters.quantize.report import BudgetStep, CandidateReport, QuantizationReport
from converters.quantize.stage import resolve_target
from converters.quantize.task_metrics import TaskDecode
from converters.tflite.candidates import TfliteConfig, convert_keras
from converters.tflite.denylist import budget_loop, float_ops
from converters.tflite.runner import TfliteRunner

FP32 = "fp32"


def choose_candidate(
    keras_model: Any,
    base: TfliteRunner,
    base_out: dict[str, Any],
    feeds: dict[str, Any],
    labels: Any | None,
    task: str,
    calib: CalibrationSet,
    options: ConvertOptions,
    progress: Any,
    decode: TaskDecode | None = None,
) -> tuple[bytes, TfliteConfig, QuantizationReport]:
    """The chosen model bytes and config (fp32 if nothing qualifies), and the report."""
    mode = options.quantize_mode
    kinds = {
        "auto": ["tflite_fp16", "tflite_int8"],
        "fp16": ["tflite_fp16"],
        "int8": ["tflite_int8"],
    }
    metric = metrics.metric_name(labels, base_out, task, decode)
    baseline = metrics.score(
        metric, base_out, base_out, labels=labels, class_values=None, decode=decode
    )
    reports = [CandidateReport(name=FP32, config={"kind": "tflite_fp32"}, status="accepted",
                               reason="baseline", metric=baseline, drop=0.0)]  # fmt: skip
    built: dict[str, tuple[TfliteConfig, bytes, TfliteRunner]] = {}
    started = time.perf_counter()
    budget_s = options.time_budget_s

    def out_of_time() -> bool:
        return budget_s is not None and time.perf_counter() - started >= budget_s

    outputs: dict[TfliteRunner, dict[str, Any]] = {}  # each model's outputs, for fidelity

    def score(runner: TfliteRunner) -> float:
        out = outputs[runner] = runner.predict(feeds)
        return metrics.score(metric, out, base_out, labels=labels, class_values=None, decode=decode)

    for kind in kinds[mode]:
        config = TfliteConfig.model_validate(
            {"kind": kind, "representative_rows": options.calibration_rows}
        )
        progress(f"TFLite {config.name}: converting")
        built_at = time.perf_counter()
        try:
            data = convert_keras(keras_model, config, calib)
            runner = TfliteRunner(data, what=config.name)
            value = score(runner)
        except ConvertError as err:
            reports.append(CandidateReport(name=config.name, config=config.model_dump(),
                                           status="failed", reason=one_line(err)))  # fmt: skip
            continue
        steps: list[BudgetStep] = []
        op_types: dict[str, str] = {}
        kept = ""
        if (
            baseline - value > options.max_drop
            and kind == "tflite_int8"
            and options.max_exclusion_steps > 0
            and not out_of_time()
        ):
            progress(
                f"TFLite {config.name}: {metric} drop {baseline - value:.4f} exceeds budget "
                f"{options.max_drop}: keeping the worst layers float (LiteRT debugger)"
            )
            try:
                loop = budget_loop(
                    keras_model, calib, score=score, baseline=baseline, options=options,
                    detail=getattr(progress, "detail", lambda _line: None),
                    out_of_time=out_of_time,
                )  # fmt: skip
            except ConvertError as err:
                progress(f"TFLite budget loop: {one_line(err, limit=200)}")
            else:
                steps = loop.steps
                if loop.config is not None and loop.runner is not None and loop.value > value:
                    config, data, runner, value = loop.config, loop.data, loop.runner, loop.value
                    op_types, kept = loop.op_types, float_ops(config, loop.op_types)
                progress(
                    f"TFLite budget loop: {len(steps)} steps in {loop.seconds:.1f} s, "
                    f"{config.name} drop {baseline - value:.4f}"
                    + (f" ({kept} kept float)" if kept else "")
                )
        drop = baseline - value
        ok = drop <= options.max_drop
        reason = (
            f"{metric} drop {drop:.4f} {'within' if ok else 'exceeds'} budget {options.max_drop}"
        )
        if steps and not ok:
            reason += f" even with {len(steps)} denylist steps"
        reports.append(
            CandidateReport(
                name=config.name,
                config=config.model_dump(),
                status="accepted" if ok else "rejected",
                reason=reason + (f"; float: {kept}" if kept else ""),
                metric=value,
                drop=drop,
                fidelity=metrics.fidelity(outputs[runner], base_out),
                size_bytes=len(data),
                excluded_nodes=list(config.denylisted_nodes),
                float_ops=[op_types.get(n, "?") for n in config.denylisted_nodes],
                budget_steps=steps,
                seconds=time.perf_counter() - built_at,
            )  # fmt: skip
        )
        if ok:
            built[config.name] = (config, data, runner)
    fp32_bytes_len = base.size
    reports[0].size_bytes, reports[0].size_ratio = fp32_bytes_len, 1.0
    for r in reports[1:]:
        if r.size_bytes:
            r.size_ratio = fp32_bytes_len / r.size_bytes
    latencies: dict[str, float] = {}
    accepted: set[str] = set()
    if built:
        progress(f"latency gate: {len(built) + 1} TFLite models")
        sessions = {FP32: base, **{k: v[2] for k, v in built.items()}}
        feed = {k: v[:1] for k, v in feeds.items()}
        timings = benchmark(
            sessions, feed, warmup=options.latency_warmup,
            rounds=options.gate_rounds, runs_per_round=options.gate_runs_per_round,
        )  # fmt: skip
        latencies = {k: t.p50_ms for k, t in timings.items()}
        reports[0].latency_ms_p50, reports[0].speedup = latencies[FP32], 1.0
        for r in reports[1:]:
            if r.name in built:
                verdict = gate(timings[FP32], timings[r.name], min_speedup=options.min_speedup)
                r.latency_ms_p50, r.speedup = latencies[r.name], verdict.speedup
                if verdict.accepted:
                    accepted.add(r.name)
                    r.reason += f"; {verdict.reason}"
                else:
                    r.status, r.reason = "rejected", f"latency gate: {verdict.reason}"
    chosen: str | None = None
    if accepted:
        chosen, refused = choose_confirmed(
            sessions, feed, latencies, accepted, baseline=FP32,
            warmup=options.latency_warmup, runs=options.gate_runs_per_round * 5,
        )  # fmt: skip
        for r in reports[1:]:
            if r.name in refused:
                r.status, r.reason = "rejected", f"latency gate: {refused[r.name]}"
    if chosen is None and mode in ("int8", "fp16"):
        why = "; ".join(f"{r.name}: {r.reason}" for r in reports[1:]) or "no candidate"
        raise ConvertError(f"--quantize {mode}: no TFLite candidate qualifies ({why})")
    target = resolve_target(options)
    for r in reports:
        if r.name == (chosen or FP32):
            r.status = "chosen"
    report = QuantizationReport(
        mode=mode, target=target.name, target_arch=target.arch, target_int8_fast=target.int8_fast,
        max_drop=options.max_drop, metric=metric, baseline_metric=baseline,
        eval_rows=len(next(iter(feeds.values()))),
        eval_source="eval" if options.eval_data else "calibration",
        calibration_file=calib.path.name, calibration_kind=calib.kind,
        calibration_samples=min(calib.samples, options.calibration_rows),
        calibration_sha256=calib.sha256, threads=1, normalisation=[], candidates=reports,
        chosen=chosen or FP32,
    )  # fmt: skip
    if chosen is None:
        return base.model, TfliteConfig(kind="tflite_fp32"), report
    config, data, _ = built[chosen]
    return data, config, report
