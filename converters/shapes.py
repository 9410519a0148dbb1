"""Specialising an ONNX model's dynamic input dimensions before anything else runs on it.

A user's model often declares ``x[?, 3, ?, ?]`` while the device feeds one size. Fixing those
dimensions first lets every later step (validation, calibration, the latency gate, the
self-test) run the graph the device will run, and makes onnxruntime plan a faster graph: a real
text detector went from 35.6 to 20.4 ms and a small classifier from 2.0 to 0.9 ms with no
quantization at all (FIELD_NOTES). The batch dimension stays dynamic (a device may batch; the
runs here use the deployment batch, ``--input-shape``'s first dimension or 1); every other
dynamic dimension is taken from ``--input-shape``, else from the calibration data's rows, else
the eval data's.
``--keep-dynamic`` leaves the graph as it is and only uses the data's shapes to run it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from converters.calibration import peek_row_shapes
from edgefleet.contract import Preprocessing, TensorSpec

if TYPE_CHECKING:
    from onnx import ModelProto


@dataclass(frozen=True)
class Specialisation:
    """What was fixed: ``x[2]: d2 → 48`` lines, and where the sizes came from."""

    changes: list[str] = field(default_factory=list)
    source: str | None = None

    def note(self) -> str | None:
        if not self.changes:
            return None
        return f"dynamic input dims fixed from {self.source}: {', '.join(self.changes)}"


def data_row_shapes(
    inputs: list[TensorSpec],
    *,
    calibration: Path | None,
    eval_data: Path | None,
    preprocessing: Preprocessing | None,
) -> tuple[dict[str, list[int]], str | None]:
    """Each input's row shape (dims after the batch) from the first data file that has it."""
    names = [s.name for s in inputs]
    for path, what in ((calibration, "calibration data"), (eval_data, "eval data")):
        if path is None:
            continue
        rows = peek_row_shapes(path, names=names, preprocessing=preprocessing)
        if rows:
            return rows, f"{what} {path.name}"
    return {}, None


def specialise(
    model: ModelProto,
    *,
    inputs: list[TensorSpec],
    overrides: Mapping[str, list[int]],
    rows: Mapping[str, list[int]],
    source: str | None,
) -> Specialisation:
    """Fix ``model``'s dynamic input dims in place (see the module docstring)."""
    changes: list[str] = []
    specs = {s.name: s for s in inputs}
    for value in model.graph.input:
        spec = specs.get(value.name)
        if spec is None:
            continue  # an initializer listed as an input
        full, row = overrides.get(value.name), rows.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if full is not None and len(full) != len(dims):
            full = None  # check_overrides names the mismatch
        if row is not None and len(row) != len(dims) - 1:
            row = None  # the data readers name the mismatch, with the file
        for index, dim in enumerate(dims):
            if index == 0 or (dim.HasField("dim_value") and dim.dim_value > 0):
                continue
            want = full[index] if full else (row[index - 1] if row else None)
            if want is None:
                continue
            label = dim.dim_param or f"d{index}"
            dim.Clear()
            dim.dim_value = int(want)
            changes.append(f"{value.name}[{index}] {label}→{want}")
    if changes:
        # Stale inferred shapes of inner tensors would contradict the fixed inputs.
        del model.graph.value_info[:]
        _fix_outputs(model)
    given = "--input-shape" if overrides else None
    where = ", ".join(w for w in (given, source) if w) or None
    return Specialisation(changes=changes, source=where)


def _fix_outputs(model: ModelProto) -> None:
    """Output dims ONNX shape inference can now compute are written into the graph outputs."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is a nicety: on any failure the outputs stay symbolic
        return
    by_name = {v.name: v for v in inferred.graph.output}
    for value in model.graph.output:
        got = by_name.get(value.name)
        if got is None or not got.type.tensor_type.HasField("shape"):
            continue
        new = got.type.tensor_type.shape.dim
        old = value.type.tensor_type.shape.dim
        if len(new) != len(old):
            continue
        for index, dim in enumerate(old):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if new[index].HasField("dim_value") and new[index].dim_value > 0 and index > 0:
                dim.Clear()
                dim.dim_value = int(new[index].dim_value)
