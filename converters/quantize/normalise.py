"""Bring an fp32 ONNX model into the shape quantization wants, without changing what it computes.

1. Opset upgrade (``onnx.version_converter`` to :data:`UPGRADE_OPSET`) when the model is older
   than opset 13: per-channel ``DequantizeLinear`` needs an ``axis`` (opset 13).
2. Dynamic input dimensions specialised to the deployment shape (``--input-shape`` fixes all of
   an input's dimensions; otherwise the calibration rows fix every dimension but the batch).
3. ``quant_pre_process``: symbolic + ONNX shape inference and onnxruntime's basic graph
   optimisation; when symbolic inference fails it is retried with ``skip_symbolic_shape=True``.

Each result is run on the check rows and compared with the original's outputs; a step that
changes them is dropped (and said so in the notes), never shipped.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.errors import one_line
from converters.evaldata import batch_of
from converters.onnx_graph import default_opset, tensor_specs
from converters.runtime import make_session, run_batched

if TYPE_CHECKING:
    from onnx import ModelProto

#: Per-channel QDQ needs opset 13; older graphs are upgraded to this one.
UPGRADE_OPSET = 17
PER_CHANNEL_MIN_OPSET = 13


@dataclass
class Normalised:
    """The fp32 model every candidate starts from, and what was done to it."""

    model: ModelProto
    path: Path
    opset: int | None
    notes: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    #: Its outputs on the check rows, when a check ran it (saves running it again).
    outputs: dict[str, Any] | None = None

    @property
    def per_channel_ok(self) -> bool:
        return self.opset is not None and self.opset >= PER_CHANNEL_MIN_OPSET


def outputs_match(got: Mapping[str, Any], want: Mapping[str, Any]) -> str | None:
    """None when ``got`` equals ``want`` within float32 rounding (and argmax), else why not."""
    import numpy as np

    for name, ref in want.items():
        if name not in got:
            return f"output {name!r} is missing"
        a, b = np.asarray(got[name]), np.asarray(ref)
        if a.shape != b.shape:
            return f"output {name!r} has shape {list(a.shape)}, expected {list(b.shape)}"
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return f"output {name!r} differs"
            continue
        scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
        err = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
        if err > 1e-4 * scale:
            return f"output {name!r} differs by up to {err:.3g}"
    return None


def _upgrade(model: ModelProto, notes: list[str], steps: list[str]) -> ModelProto:
    from onnx import version_converter

    opset = default_opset(model)
    if opset is None or opset >= PER_CHANNEL_MIN_OPSET:
        return model
    try:
        upgraded = version_converter.convert_version(model, UPGRADE_OPSET)
    except Exception as err:  # the converter raises RuntimeError/ValueError/its own types
        notes.append(f"opset {opset} → {UPGRADE_OPSET} failed ({one_line(err, limit=120)})")
        return model
    steps.append(f"opset {opset}→{UPGRADE_OPSET}")
    return upgraded


def _fix_dims(
    model: ModelProto, shapes: Mapping[str, list[int]], rows: Mapping[str, list[int]]
) -> tuple[ModelProto, list[str]]:
    """Set dynamic input dims: all of them from ``shapes``, the non-batch ones from ``rows``."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    changed: list[str] = []
    for value in fixed.graph.input:
        full = shapes.get(value.name)
        row = rows.get(value.name)
        dims = value.type.tensor_type.shape.dim
        for index, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            want = full[index] if full else (row[index - 1] if row and index > 0 else None)
            if want is not None:
                dim.Clear()
                dim.dim_value = int(want)
                changed.append(f"{value.name}[{index}]={want}")
    if changed:
        del fixed.graph.value_info[:]
    return fixed, changed


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def quiet_onnxruntime(notes: list[str], step: str) -> Iterator[None]:
    """Keep onnxruntime's quantization tools off the terminal; their errors become one note.

    ``quant_pre_process`` logs "ONNX Runtime Model Optimization Failed!" and a whole traceback
    at ERROR when its optimisation pass fails (issue #12: on a real opset-11 classifier) and
    carries on; symbolic shape inference prints to stdout. Both are caught here and reported as
    one line in report.json's notes.
    """
    collect = _Collect()
    logger = logging.getLogger("onnxruntime")
    before = logger.propagate
    logger.addHandler(collect)
    logger.propagate = False
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            yield
    finally:
        logger.removeHandler(collect)
        logger.propagate = before
        errors = [r for r in collect.records if r.levelno >= logging.ERROR]
        if errors:
            first = one_line(Exception(errors[0].getMessage()), limit=100)
            tail = [r.getMessage().strip().splitlines() for r in errors[1:]]
            cause = next((lines[-1] for lines in reversed(tail) if lines), "")
            notes.append(
                f"{step}: onnxruntime said '{first}'"
                + (f" ({one_line(Exception(cause), limit=120)})" if cause else "")
            )


def tools_without_torch() -> None:
    """Register the ``onnxruntime.tools`` package without running its ``__init__``, which
    imports torch whenever torch is installed (for PyTorch export helpers that
    ``quant_pre_process`` never uses): 4-7 s of CPU in an ONNX model's conversion here, more
    than the pre-processing itself. Its submodules import as usual. Nothing is done when
    torch or the package is already imported."""
    import importlib.util
    import sys

    if "onnxruntime.tools" in sys.modules or "torch" in sys.modules:
        return
    spec = importlib.util.find_spec("onnxruntime.tools")
    if spec is None or spec.submodule_search_locations is None:
        return
    sys.modules["onnxruntime.tools"] = importlib.util.module_from_spec(spec)


def _pre_process(model: ModelProto, work: Path, notes: list[str]) -> ModelProto | None:
    import onnx
    from onnxruntime.quantization import quant_pre_process

    tools_without_torch()

    target = (work / "preprocessed.onnx").resolve()
    for skip_symbolic in (False, True):
        try:
            # When symbolic inference fails, onnxruntime saves "sym_shape_infer_temp.onnx" into
            # the current directory: keep that litter inside the work directory.
            with contextlib.chdir(work), quiet_onnxruntime(notes, "quant_pre_process"):
                quant_pre_process(model, target, skip_symbolic_shape=skip_symbolic)
            if skip_symbolic:
                notes.append("symbolic shape inference failed; used skip_symbolic_shape=True")
            return onnx.load(str(target))
        except Exception as err:  # shape inference asserts, ORT raises pybind errors
            last = one_line(err, limit=120)
    notes.append(f"quant_pre_process failed ({last}); continuing without it")
    return None


def normalise(
    model: ModelProto,
    *,
    shapes: Mapping[str, list[int]],
    rows: Mapping[str, list[int]],
    check_feeds: Mapping[str, Any],
    reference: Mapping[str, Any],
    work: Path,
) -> Normalised:
    """The fp32 starting point, verified against ``reference`` (the original's outputs)."""
    notes: list[str] = []
    steps: list[str] = []
    outputs: dict[str, Any] | None = None
    current = _upgrade(model, notes, steps)
    fixed, changed = _fix_dims(current, shapes, rows)
    if changed:
        problem, got = _check(fixed, check_feeds, reference, notes, "fixing input dims")
        if problem is None:
            current, outputs = fixed, got
            steps.append("fixed " + ", ".join(changed))
    pre = _pre_process(current, work, notes)
    if pre is not None:
        problem, got = _check(pre, check_feeds, reference, notes, "pre-processing")
        if problem is None:
            current, outputs = pre, got
            steps.append("quant_pre_process (shape inference + ORT basic optimisation)")
    if current is not model and outputs is None:
        problem, outputs = _check(current, check_feeds, reference, notes, "upgrade")
        if problem is not None:
            current, steps, outputs = model, [], None
    path = work / "fp32.onnx"
    path.write_bytes(current.SerializeToString())
    return Normalised(
        model=current,
        path=path,
        opset=default_opset(current),
        notes=notes,
        steps=steps,
        outputs=outputs,
    )


def _check(
    model: ModelProto,
    feeds: Mapping[str, Any],
    reference: Mapping[str, Any],
    notes: list[str],
    step: str,
) -> tuple[str | None, dict[str, Any] | None]:
    """(None, its outputs) when ``model`` computes ``reference``, else (why not, None)."""
    got: dict[str, Any] | None = None
    try:
        inputs, _ = tensor_specs(model)
        session = make_session(model.SerializeToString(), what=f"the model after {step}")
        got = run_batched(session, feeds, batch=batch_of(inputs))
    except Exception as err:  # any failure means: do not use this step
        problem: str | None = one_line(err, limit=120)
    else:
        problem = outputs_match(got, reference)
    if problem is not None:
        notes.append(f"{step} dropped: {problem}")
        return problem, None
    return None, got
