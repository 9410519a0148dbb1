"""A pushed manifest checked against the model file's real inputs and outputs.

A manifest that says ``(batch, 192, 192, 3)`` for a model fixed at ``(1, 192, 192, 3)`` was
accepted and then refused by every device (issue #12); the server now reads what the model
file declares (without a runtime: :mod:`.onnx_reader`, :mod:`.tflite_reader`) and refuses a
manifest that disagrees, naming the tensor and the difference.

What must agree:
- inputs: the same names (a device feeds exactly these); outputs: every output the manifest
  names exists in the model (a model may have more, e.g. an ONNX ``label`` nobody reads);
- the element type of each;
- the shape: the same rank, and each dim the model fixes is the manifest's number; a dim the
  model leaves dynamic may be a name or a number in the manifest (the converter may
  specialise it), but a fixed dim may not be called dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgefleet.contract import Manifest, TensorSpec
from fleet_server.services.model_io.base import ModelIO, ModelIOError, ModelIOReader, TensorIO
from fleet_server.services.model_io.onnx_reader import read_onnx
from fleet_server.services.model_io.tflite_reader import read_tflite

__all__ = ["READERS", "ModelIO", "ModelIOError", "TensorIO", "io_mismatch", "read_model_io"]

#: manifest format → reader (hand-written registry).
READERS: dict[str, ModelIOReader] = {"onnx": read_onnx, "tflite": read_tflite}


def read_model_io(fmt: str, path: Path) -> ModelIO:
    reader = READERS.get(fmt)
    if reader is None:
        raise ModelIOError(f"no reader for model format {fmt!r}")
    try:
        return reader(path)
    except ModelIOError:
        raise
    except (OSError, ValueError, IndexError, OverflowError, RecursionError) as err:
        raise ModelIOError(f"cannot read the {fmt} model: {err}") from err


def _dims(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "unknown"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _tensor_mismatch(kind: str, spec: TensorSpec, real: TensorIO) -> str | None:
    if real.dtype is None:
        return f"{kind} {spec.name!r} is not a tensor in the model"
    if spec.dtype != real.dtype:
        return f"{kind} {spec.name!r}: manifest dtype {spec.dtype}, model {real.dtype}"
    if real.shape is None:
        return None
    declared = [d if isinstance(d, int) else None for d in spec.shape]
    if len(spec.shape) != len(real.shape):
        return (
            f"{kind} {spec.name!r}: manifest shape {_dims(declared)} has rank {len(spec.shape)}, "
            f"model {_dims(real.shape)} rank {len(real.shape)}"
        )
    for axis, (want, have) in enumerate(zip(spec.shape, real.shape, strict=True)):
        if have is None:
            continue
        if want != have:
            said = f"dynamic {want!r}" if isinstance(want, str) else str(want)
            return (
                f"{kind} {spec.name!r}: dim {axis} is {said} in the manifest but {have} in the "
                f"model (manifest {_dims(declared)}, model {_dims(real.shape)})"
            )
    return None


def io_mismatch(manifest: Manifest, real: ModelIO) -> str | None:
    """The first disagreement between ``manifest`` and the model's own inputs/outputs."""
    model_in = {t.name: t for t in real.inputs}
    model_out = {t.name: t for t in real.outputs}
    declared_in = [s.name for s in manifest.inputs]
    missing = sorted(set(model_in) - set(declared_in))
    if missing:
        return f"the model has input {missing[0]!r}, which the manifest does not list"
    for kind, specs, tensors in (
        ("input", manifest.inputs, model_in),
        ("output", manifest.outputs, model_out),
    ):
        for spec in specs:
            found = tensors.get(spec.name)
            if found is None:
                names = ", ".join(sorted(tensors)[:8]) or "none"
                return (
                    f"manifest {kind} {spec.name!r} is not a model {kind} (the model has: {names})"
                )
            problem = _tensor_mismatch(kind, spec, found)
            if problem is not None:
                return problem
    return None
