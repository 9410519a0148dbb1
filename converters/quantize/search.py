"""Building and validating candidates: calibrate (once per range estimator), quantize, score
on the eval rows, and when a candidate misses the budget try the other estimators, then the
accuracy-budget loop (worst tensors left in float, one at a time)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.errors import ConvertError, one_line
from converters.evaldata import batch_of
from converters.onnx_graph import tensor_specs
from converters.quantize import metrics
from converters.quantize.configs import DynamicInt8, Fp16, StaticInt8, config_name
from converters.quantize.early_stop import (
    BOUNDED,
    best_case,
    chunk_rows,
    far_beyond,
    loop_out_of_reach,
)
from converters.quantize.engines import INT8_OPS, QuantizeError, quantize
from converters.quantize.probe import PROBE_ROWS
from converters.quantize.ranking import TensorRisk, activation_risks, with_weights
from converters.quantize.report import BudgetStep, CandidateReport
from converters.runtime import make_session, run_batched

if TYPE_CHECKING:
    from converters.quantize.normalise import Normalised
    from converters.quantize.pipeline import QuantInput

Config = StaticInt8 | DynamicInt8 | Fp16
#: Input elements the ranking probe runs at most (rows x row size).
MAX_RANKING_ELEMENTS = 3_000_000
#: Input elements MinMax calibrates on at most unless --calibration-rows is given: onnxruntime
#: runs the calibration graph unoptimised with a ReduceMin/Max on every tensor, and 64 rows of
#: the 800x608 PicoDet (1.46 M elements a row) took 90 s at load 5 and 4 min at load 12 here,
#: the largest single cost of its conversion. 16 rows of it; every row of a 320x320 input.
MAX_CALIBRATION_ELEMENTS = 24_000_000


@dataclass
class Built:
    config: Config
    path: Path
    outputs: dict[str, Any]
    metric: float
    report: CandidateReport


@dataclass
class _Trial:
    config: Config
    path: Path
    outputs: dict[str, Any]
    #: The metric on every eval row, or (when ``rows`` is set) the best it could still reach.
    metric: float
    #: Rows validated on when validation stopped early (the budget was out of reach).
    rows: int | None = None


class Search:
    """Everything one conversion's candidates share: the fp32 model and outputs, the metric,
    the calibration caches and the tensor ranking (computed once, when first needed)."""

    def __init__(self, q: QuantInput, fp32: Normalised, fp32_out: dict[str, Any]) -> None:
        self.q = q
        self.fp32 = fp32
        self.fp32_out = fp32_out
        self.metric_name = metrics.metric_name(q.labels, fp32_out, q.task, q.decode)
        self.baseline = self.score(fp32_out)
        self.fp32_size = fp32.path.stat().st_size
        self._activations: list[TensorRisk] | None = None
        self._ranking: dict[bool, list[TensorRisk]] = {}
        self.calib_rows = self._calibration_rows()
        self.started = time.perf_counter()
        self._batch = batch_of(tensor_specs(fp32.model)[0])

    def score(self, outputs: Mapping[str, Any]) -> float:
        return metrics.score(
            self.metric_name,
            outputs,
            self.fp32_out,
            labels=self.q.labels,
            class_values=self.q.class_values,
            decode=self.q.decode,
        )

    def validate(self, config: Config, path: Path, *, early: bool = True) -> _Trial:
        """Score ``path`` on the eval rows chunk by chunk, stopping once even perfect remaining
        rows could not bring it within budget (:mod:`converters.quantize.early_stop`); with
        ``early=False`` on every row (the budget loop compares exact drops)."""
        import numpy as np

        session = make_session(path.read_bytes(), what=path.name)
        feeds = self.q.feeds
        total = len(next(iter(feeds.values())))
        bounded = early and self.metric_name in BOUNDED
        step = chunk_rows(total, self._batch) if bounded else total
        parts: list[dict[str, Any]] = []
        done = 0
        while done < total:
            chunk = {k: v[done : done + step] for k, v in feeds.items()}
            parts.append(run_batched(session, chunk, batch=self._batch, what=path.name))
            done = min(total, done + step)
            if done == total:
                break
            got = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
            reach = best_case(
                self.metric_name,
                got,
                self.fp32_out,
                labels=self.q.labels,
                class_values=self.q.class_values,
                decode=self.q.decode,
            )
            if reach is not None and not self.within(reach):
                return _Trial(config, path, got, reach, rows=done)
        outputs = {n: np.concatenate([np.atleast_1d(p[n]) for p in parts]) for n in parts[0]}
        return _Trial(config, path, outputs, self.score(outputs))

    def build(self, config: Config, label: str, *, probe: bool = False) -> Path:
        """Quantize into ``<label>.onnx``; a probe build calibrates on :data:`PROBE_ROWS`
        rows (its own range cache), a real one on ``--calibration-rows`` (one cache a method)."""
        target = self.q.work / f"{label}.onnx"
        rows = min(PROBE_ROWS, self.calib_rows) if probe else self.calib_rows
        if isinstance(config, StaticInt8) and config.method != "minmax":
            # onnxruntime's histogram calibrators (entropy, percentile) hold every row's inner
            # tensors in memory: 64 rows of an 800x608 detector took 14 GB and the OOM killer.
            rows = min(rows, self.histogram_rows())
        quantize(
            config,
            source=self.fp32.path,
            target=target,
            calibration=lambda: self.q.calibration.reader(limit=rows),
            cache=self.q.work / ("ranges-probe" if probe else "ranges"),
        )
        return target

    def trial(self, config: Config, label: str, *, early: bool = True) -> _Trial:
        return self.validate(config, self.build(config, label), early=early)

    def ranking(self, *, per_channel: bool) -> list[TensorRisk]:
        """The budget loop's order for a per-channel (or per-tensor) candidate, made once."""
        if self._activations is None:
            rows = next(self.q.calibration.batches(limit=self._ranking_rows())).inputs
            self._activations = activation_risks(self.fp32.model, rows, op_types=INT8_OPS)
        if per_channel not in self._ranking:
            self._ranking[per_channel] = with_weights(
                self.fp32.model, self._activations, per_channel
            )
        return self._ranking[per_channel]

    def _calibration_rows(self) -> int:
        """Rows static int8 calibrates on: ``--calibration-rows`` when given, else the default
        bounded by :data:`MAX_CALIBRATION_ELEMENTS` (at least 16 rows)."""
        opts = self.q.options
        rows = min(opts.calibration_rows, self.q.calibration.samples)
        if "calibration_rows" in opts.model_fields_set:
            return rows
        first = next(self.q.calibration.batches(limit=1)).inputs
        per_row = sum(int(v[0].size) for v in first.values()) or 1
        return max(1, min(rows, max(16, MAX_CALIBRATION_ELEMENTS // per_row)))

    def histogram_rows(self) -> int:
        """Calibration rows for entropy/percentile: bounded like the ranking probe's."""
        return self._ranking_rows()

    def _ranking_rows(self) -> int:
        """Rows the ranking probe runs: every inner tensor of each row is kept in memory, so a
        big input gets few rows (an 800x608 layout detector: 2; a 48x192 text line: 64)."""
        first = next(self.q.calibration.batches(limit=1)).inputs
        per_row = sum(int(v[0].size) for v in first.values()) or 1
        return max(1, min(self.calib_rows, 64, MAX_RANKING_ELEMENTS // per_row))

    def out_of_time(self) -> bool:
        """True once the search has used up ``--time-budget`` (never without one)."""
        budget = self.q.options.time_budget_s
        return budget is not None and time.perf_counter() - self.started >= budget

    def within(self, metric: float) -> bool:
        return self.baseline - metric <= self.q.options.max_drop

    def candidate(
        self, config: Config, label: str, *, prebuilt: Path | None = None
    ) -> list[Built | CandidateReport]:
        """Build and validate ``config``; a static int8 one that misses the budget with MinMax
        is retried with the other range estimators (``--calibration-methods``), and the best of
        those goes through the budget loop only when none is within budget."""
        started = time.perf_counter()
        name = config_name(config)
        self.q.progress(f"calibrating and quantizing {name}")
        try:
            if prebuilt is not None:  # fp16 / dynamic int8: the probe's build is the real one
                first = self.validate(config, prebuilt)
            else:
                first = self.trial(config, label)
        except (QuantizeError, ConvertError) as err:
            return [self._failed(config, err, started)]
        if self.within(first.metric) or isinstance(config, Fp16):
            return [self._built(first, [], started)]
        results: list[Built | CandidateReport] = []
        trials = [first]
        far = far_beyond(self.baseline - first.metric, self.q.options.max_drop)
        if isinstance(config, StaticInt8) and not config.excluded_nodes and far is None:
            for method in self.q.options.calibration_methods:
                if method == config.method or self.out_of_time():
                    continue
                other = config.model_copy(update={"method": method})
                self.q.progress(
                    f"{name} misses the budget: trying {config_name(other)} "
                    f"({min(self.calib_rows, self.histogram_rows())} calibration rows)"
                )
                begun = time.perf_counter()
                try:
                    trial = self.trial(other, f"{label}-{method}")
                except (QuantizeError, ConvertError) as err:
                    results.append(self._failed(other, err, begun))
                    continue
                trials.append(trial)
                if self.within(trial.metric):
                    # The MinMax record stays, rejected; the estimator that fits is the candidate.
                    results.insert(0, self._built(first, [], started))
                    results.append(self._built(trial, [], begun))
                    return results
        best = max(trials, key=lambda t: t.metric)
        for trial in trials:
            if trial is not best:
                results.append(self._built(trial, [], started))
        steps: list[BudgetStep] = []
        note: str | None = None
        if isinstance(best.config, StaticInt8 | DynamicInt8):
            best, note = self._budget_loop(best, label, steps)
        if far is not None and isinstance(config, StaticInt8):
            methods = self.q.options.calibration_methods
            if any(m != config.method for m in methods):  # said only when there were others
                note = f"{far}; {note}" if note else far
        results.append(self._built(best, steps, started, note=note))
        return results

    def _failed(self, config: Config, err: Exception, started: float) -> CandidateReport:
        return CandidateReport(
            name=config_name(config),
            config=config.model_dump(),
            status="failed",
            reason=f"could not build: {one_line(err, limit=200)}",
            seconds=time.perf_counter() - started,
        )

    def _built(
        self, t: _Trial, steps: list[BudgetStep], started: float, *, note: str | None = None
    ) -> Built:
        budget = self.q.options.max_drop
        drop = self.baseline - t.metric
        size = t.path.stat().st_size
        total = len(next(iter(self.q.feeds.values())))
        at_least = "≥ " if t.rows is not None else ""
        reason = (
            f"{self.metric_name} drop {drop:.4f} within budget {budget}"
            if drop <= budget
            else f"{self.metric_name} drop {at_least}{drop:.4f} exceeds budget {budget}"
            + (f" even with {len(steps)} exclusion steps" if steps else "")
        )
        if t.rows is not None:
            reason += (
                f" (decided on {t.rows} of {total} eval rows: even if every other row "
                "agreed with fp32 it could not be within budget)"
            )
        if note:
            reason += f"; {note}"
        fp32_rows = {k: v[: t.rows] for k, v in self.fp32_out.items()} if t.rows else self.fp32_out
        report = CandidateReport(
            name=config_name(t.config),
            config=t.config.model_dump(),
            status="accepted" if drop <= budget else "rejected",
            reason=reason,
            metric=t.metric,
            drop=drop,
            eval_rows=t.rows,
            fidelity=metrics.fidelity(t.outputs, fp32_rows),
            size_bytes=size,
            size_ratio=self.fp32_size / max(size, 1),
            excluded_nodes=list(getattr(t.config, "excluded_nodes", ())),
            budget_steps=steps,
            seconds=time.perf_counter() - started,
        )
        return Built(t.config, t.path, t.outputs, t.metric, report)

    def _budget_loop(
        self, start: _Trial, label: str, steps: list[BudgetStep]
    ) -> tuple[_Trial, str | None]:
        """Leave the worst tensors' nodes in float, one at a time, until within budget, or
        until the pace of the steps so far cannot reach it (the reason is returned). Each
        step only re-runs the quantizer: the ranges come from the method's cache."""
        config = start.config
        assert isinstance(config, StaticInt8 | DynamicInt8)
        best = start
        excluded: set[str] = set(config.excluded_nodes)
        most = self.q.options.max_exclusion_steps
        drops: list[float] = []
        for risk in self.ranking(per_channel=config.per_channel):
            if len(steps) >= most or self.out_of_time():
                break
            if not risk.nodes or set(risk.nodes) <= excluded:
                continue
            if drops and start.rows is not None:
                # Its drop is a lower bound (validation stopped early): the pace needs the drop.
                start = self.validate(config, start.path, early=False)
                best = max(best, start, key=lambda t: t.metric if t.rows is None else -1.0)
            why = loop_out_of_reach(
                self.baseline - start.metric,
                drops,
                steps_left=most - len(steps),
                budget=self.q.options.max_drop,
                next_error=risk.error,
            )
            if why is not None:
                return best, why
            excluded |= set(risk.nodes)
            trial_config = config.model_copy(update={"excluded_nodes": tuple(sorted(excluded))})
            self.q.detail(f"budget loop: sparing {risk.tensor} ({config_name(trial_config)})")
            step = BudgetStep(
                excluded_tensor=risk.tensor,
                tensor_error=risk.error,
                excluded_nodes=sorted(excluded),
            )
            steps.append(step)
            try:
                trial = self.trial(trial_config, f"{label}-x{len(steps)}", early=False)
            except (QuantizeError, ConvertError):
                continue
            step.drop = self.baseline - trial.metric
            step.eval_rows = trial.rows
            drops.append(step.drop)
            if trial.metric > best.metric:
                best = trial
            if self.within(trial.metric):
                return trial, None
        # The untouched candidate stays the record when no step helped.
        return best, None
