"""The TFLite accuracy-budget loop: the worst layers stay float until the drop is within budget.

LiteRT's quantization debugger (``tf.lite.experimental.QuantizationDebugger``) calibrates the
model once and quantizes it in debug mode: a NumericVerify op after every quantized layer
compares its output with the float op run on the same (dequantized) input. Each layer is
scored by :func:`converters.quantize.ranking.relative_error` (per channel, the last axis: the
same measure the ONNX ranking uses), worst first. A step denylists the layer *and* the
quantized layers that read its output: a consumer re-quantizes the spared tensor with the same
range (measured on an MLP with one outlier channel: denylisting the producer alone left 0.08
argmax agreement, producer and consumer 0.99). Re-quantizing with a new denylist does not
calibrate again: it took 15 ms on that MLP.

The denylisted models keep float inputs and outputs (the debugger's ``mlir_quantize`` path),
so the artifact's precision is ``mixed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from converters.calibration import CalibrationSet
from converters.errors import ConvertError, one_line
from converters.options import ConvertOptions
from converters.quantize.ranking import TensorRisk, relative_error
from converters.quantize.report import BudgetStep
from converters.tflite.candidates import TfliteConfig, tflite_converter
from converters.tflite.runner import TfliteRunner, stdout_to_stderr

#: Input elements the ranking runs at most (rows x row size), as for the ONNX ranking probe.
MAX_RANKING_ELEMENTS = 3_000_000
#: Ops in the debug model that are the debugger's own plumbing, not layers of the model.
_PLUMBING = {"NumericVerify", "DEQUANTIZE", "QUANTIZE"}


def float_name(quantized_name: str) -> str:
    """The denylist name of a quantized tensor: MLIR names the quantized copy of tensor ``t``
    ``t1`` (or ``t2``: a model output's float copy took ``1``); TF's own debugger strips the
    digit the same way (``QuantizationDebugger._get_operand_name_and_index``)."""
    return quantized_name[:-1] if quantized_name[-1:].isdigit() else quantized_name


def _layer_error(float_value: Any, quantized: Any, scale: float, zero_point: int) -> float:
    import numpy as np

    dequantized = (np.asarray(quantized, dtype=np.int32) - zero_point) * scale
    return relative_error(float_value, dequantized, channel_axis=-1)


class DebugSession:
    """One calibration of ``model`` (a Keras model or a SavedModel's path), many denylists."""

    def __init__(self, model: Any, calib: CalibrationSet, *, rows: int) -> None:
        import tensorflow as tf

        self.calib = calib
        self.rows = rows
        converter = tflite_converter(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = self._dataset(rows)
        try:
            with stdout_to_stderr():
                self.debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=self._dataset(self._ranking_rows())
                )
        except Exception as err:  # TF raises ValueError, ConverterError and others
            raise ConvertError(f"LiteRT quantization debugger failed: {one_line(err)}") from err
        #: denylist name → op type (FULLY_CONNECTED, CONV_2D, ...), filled by :meth:`ranking`.
        self.ops: dict[str, str] = {}

    def _dataset(self, limit: int) -> Callable[[], Iterator[list[Any]]]:
        def rows() -> Iterator[list[Any]]:
            for row in self.calib.rows(limit=limit):
                yield list(row.values())

        return rows

    def _ranking_rows(self) -> int:
        """Every inner tensor of a row is kept while it runs: a big input gets few rows."""
        first = next(self.calib.rows(limit=1))
        per_row = sum(int(v.size) for v in first.values()) or 1
        return max(1, min(self.rows, 64, MAX_RANKING_ELEMENTS // per_row))

    def ranking(self) -> list[TensorRisk]:
        """Quantized layers, worst first; ``nodes`` are the denylist names that spare each."""
        import tensorflow as tf

        try:
            with stdout_to_stderr():
                debug_model = self.debugger.get_debug_quantized_model()
                stats = tf.lite.experimental.QuantizationDebugger(
                    quant_debug_model_content=debug_model,
                    debug_dataset=self._dataset(self._ranking_rows()),
                    debug_options=tf.lite.experimental.QuantizationDebugOptions(
                        layer_direct_compare_metrics={"relative_error": _layer_error}
                    ),
                )
                stats.run()
        except Exception as err:  # TF raises ValueError/RuntimeError with C++ text
            raise ConvertError(f"LiteRT quantization debugger failed: {one_line(err)}") from err
        graph = _Graph(debug_model)
        self.ops.update(graph.op_types)
        risks = []
        for key, values in (stats.layer_statistics or {}).items():
            tensor = graph.verified.get(key)
            if tensor is None:
                continue
            nodes = [float_name(tensor), *graph.consumers(tensor)]
            risks.append(
                TensorRisk(float_name(tensor), float(values["relative_error"]), tuple(nodes))
            )
        return sorted(risks, key=lambda r: r.error, reverse=True)

    def quantize(self, denylist: Sequence[str]) -> bytes:
        """The int8 model with the ops writing ``denylist`` tensors kept float."""
        import tensorflow as tf

        try:
            with stdout_to_stderr():
                self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_nodes=list(denylist)
                )
                return bytes(self.debugger.get_nondebug_quantized_model())
        except Exception as err:  # ValueError when nothing is left quantized, and others
            raise ConvertError(f"int8 with {len(denylist)} float layers: {one_line(err)}") from err


class _Graph:
    """Which quantized tensor each NumericVerify checks, and which layers read it.

    Read from the debug model's op list with the interpreter's ``_get_ops_details`` (the
    debugger itself relies on it: the public API exposes no graph)."""

    def __init__(self, model: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=model)
        names = {int(t["index"]): str(t["name"]) for t in interpreter.get_tensor_details()}
        ops = interpreter._get_ops_details()
        #: NumericVerify output name (layer_statistics' key) → the quantized tensor it checks.
        self.verified: dict[str, str] = {}
        self.op_types: dict[str, str] = {}
        self._readers: dict[str, list[str]] = {}
        producers = {int(o): str(op["op_name"]) for op in ops for o in op["outputs"]}
        for op in ops:
            if op["op_name"] == "NumericVerify":
                tensor = names[int(op["inputs"][0])]
                self.verified[names[int(op["outputs"][0])]] = tensor
                producer = producers.get(int(op["inputs"][0]), "?")
                self.op_types[float_name(tensor)] = producer
        checked = set(self.verified.values())
        for op in ops:
            if op["op_name"] in _PLUMBING:
                continue
            outputs = [names[int(o)] for o in op["outputs"] if names[int(o)] in checked]
            for i in op["inputs"]:
                if int(i) >= 0 and int(i) in names:
                    self._readers.setdefault(names[int(i)], []).extend(outputs)

    def consumers(self, tensor: str) -> list[str]:
        """Denylist names of the quantized layers that read ``tensor``."""
        return [float_name(t) for t in self._readers.get(tensor, []) if t != tensor]


@dataclass
class LoopOutcome:
    """The best model the loop found (``None`` fields when no step could be built)."""

    steps: list[BudgetStep] = field(default_factory=list)
    config: TfliteConfig | None = None
    data: bytes = b""
    runner: TfliteRunner | None = None
    value: float = 0.0
    op_types: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def budget_loop(
    model: Any,
    calib: CalibrationSet,
    *,
    score: Callable[[TfliteRunner], float],
    baseline: float,
    options: ConvertOptions,
    detail: Callable[[str], None],
    out_of_time: Callable[[], bool],
) -> LoopOutcome:
    """Denylist the worst layers one step at a time until ``baseline - score`` is within
    ``--max-drop`` (or ``--max-exclusion-steps`` / ``--time-budget`` run out), then undo the
    steps that were not needed; the best model found (fewest float layers among equals)."""
    started = time.perf_counter()
    outcome = LoopOutcome()
    session = DebugSession(model, calib, rows=options.calibration_rows)
    ranking = session.ranking()
    outcome.op_types = session.ops
    excluded: list[str] = []
    spared: list[tuple[TensorRisk, list[str]]] = []  # each step's risk and the nodes it added
    built: dict[tuple[str, ...], tuple[TfliteConfig, bytes, TfliteRunner, float]] = {}

    def trial(risk: TensorRisk, nodes: list[str], *, restored: bool) -> float | None:
        """Build and score the model denylisting ``nodes``; record the step; its drop."""
        step = BudgetStep(
            excluded_tensor=risk.tensor,
            tensor_error=risk.error,
            excluded_nodes=list(nodes),
            restored=restored,
        )
        outcome.steps.append(step)
        config = TfliteConfig(
            kind="tflite_int8",
            representative_rows=options.calibration_rows,
            denylisted_nodes=tuple(nodes),
        )
        try:
            data = session.quantize(nodes)
            runner = TfliteRunner(data, what=config.name)
            value = score(runner)
        except ConvertError as err:
            detail(f"budget loop: {config.name} failed: {one_line(err, limit=160)}")
            return None
        step.drop = baseline - value
        if restored:
            back = [n for n in excluded if n not in nodes]
            what = f"undoing the step for {risk.tensor}: {', '.join(back)} back to int8"
        else:
            what = f"{session.ops.get(risk.tensor, '?')} {risk.tensor} and its readers float"
        detail(f"budget loop: {config.name}: {what} (error {risk.error:.3f}), drop {step.drop:.4f}")
        built[tuple(nodes)] = (config, data, runner, value)
        return step.drop

    budget = options.max_drop
    within = False
    for risk in ranking:
        if len(outcome.steps) >= options.max_exclusion_steps or out_of_time():
            break
        new = [n for n in risk.nodes if n not in excluded]
        if not new:
            continue
        excluded += new
        spared.append((risk, new))
        drop = trial(risk, excluded, restored=False)
        if drop is not None and drop <= budget:
            within = True
            break
    # Pruning: the per-layer error is measured on the quantized input, so a layer after a
    # broken one ranks high too (measured: the reader of the outlier layer ranked first, the
    # loop then kept 3 layers float where 2 do). Each earlier step is undone if the budget
    # still holds without it (keeping the nodes another kept step needs, such as the reader
    # of a spared layer).
    kept = list(spared)
    for entry in reversed(spared[:-1] if within else []):
        if out_of_time():
            break
        risk, added = entry
        needed = {n for other, _ in kept if other is not risk for n in other.nodes}
        fewer_nodes = [n for n in excluded if n not in added or n in needed]
        if len(fewer_nodes) == len(excluded):
            continue
        drop = trial(risk, fewer_nodes, restored=True)
        if drop is not None and drop <= budget:
            excluded = fewer_nodes
            kept.remove(entry)
    # Within budget: the pruned set. Otherwise the step that came closest.
    best = built.get(tuple(excluded)) if within else None
    if best is None and built:
        best = max(built.values(), key=lambda b: b[3])
    if best is not None:
        outcome.config, outcome.data, outcome.runner, outcome.value = best
    outcome.seconds = time.perf_counter() - started
    return outcome


def float_ops(config: TfliteConfig, op_types: dict[str, str]) -> str:
    """``FULLY_CONNECTED x2, CONV_2D`` for the report: which kinds of op stayed float."""
    counts: dict[str, int] = {}
    for name in config.denylisted_nodes:
        kind = op_types.get(name, "?")
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(counts.items()))
