"""PyTorch models: TorchScript (``torch.jit.save``) or, only with ``trust_pickle``, a whole
``nn.Module`` saved with ``torch.save(model)``, exported to ONNX.

**Security**: a pickled ``nn.Module`` is unpickled with ``weights_only=False``, which runs code
from the file; the converter refuses unless ``--trust-pickle`` is given, and warns when it is.
TorchScript archives are loaded with ``torch.jit.load``.

Export tries ``torch.onnx.export(dynamo=True)`` first (with a dynamic batch dimension) and
falls back to the TorchScript exporter, recording why. The input shape comes from
``--input-shape input=...`` or from the calibration data's first row; the input is ``input``
and the output ``output``. A module with several inputs takes one ``--input-shape NAME=...``
per input, in its ``forward`` order, and the inputs are named so; several outputs (a tuple or
list) are named ``output_0``, ``output_1``... The source model itself is the fidelity reference.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.errors import ConvertError, InputError, one_line
from converters.options import ConvertOptions
from converters.sources.base import LoadedModel

INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: The dynamo exporter's lowest implemented opset (it upgrades 17 to 18 anyway).
OPSET = 18

log = logging.getLogger(__name__)


def _load_module(path: Path, options: ConvertOptions) -> tuple[Any, str]:
    import torch

    if path.suffix.lower() == ".pt2":  # torch.export.save: a program, not code to unpickle
        try:
            return torch.export.load(str(path)).module(), "torch.export"
        except Exception as err:  # torch.export raises many types
            raise InputError(f"{path.name} is not a torch.export program: {one_line(err)}") from err
    try:
        return torch.jit.load(str(path), map_location="cpu"), "torchscript"  # type: ignore[no-untyped-call]
    except Exception as jit_err:  # not a TorchScript archive (or a broken one)
        if not options.trust_pickle:
            raise InputError(
                f"{path.name} is not TorchScript ({one_line(jit_err, limit=80)}); a pickled "
                "nn.Module runs code when loaded: pass --trust-pickle only for your own files"
            ) from jit_err
    warnings.warn(
        f"unpickling {path.name} with weights_only=False: this runs code from the file",
        stacklevel=2,
    )
    try:
        # Trusted input only (--trust-pickle): unpickling executes code.
        module = torch.load(str(path), map_location="cpu", weights_only=False)  # noqa: S614
    except Exception as err:  # unpickling can raise anything the file's code raises
        raise InputError(f"{path.name} is not a readable torch file: {one_line(err)}") from err
    if not isinstance(module, torch.nn.Module):
        raise InputError(
            f"{path.name} holds a {type(module).__name__}, not an nn.Module (a state_dict needs "
            "its model class: save the whole module or TorchScript)"
        )
    return module, "pickle"


def _input_shapes(path: Path, options: ConvertOptions) -> dict[str, list[int]]:
    """Input name → shape, in forward() order: every --input-shape, else ``input``'s."""
    if not options.input_shapes:
        raise InputError(
            f"{path.name}: a PyTorch model has no declared input shape; pass "
            f"--input-shape {INPUT_NAME}=1,C,H,W (one per input, in forward() order) or "
            "--calibration data"
        )
    return dict(options.input_shapes)


def _output_names(module: Any, examples: tuple[Any, ...]) -> list[str]:
    """``output`` for one tensor, ``output_<i>`` for each tensor of a tuple or list."""
    import torch

    with torch.no_grad():
        out = module(*examples)
    if isinstance(out, tuple | list):
        if not all(isinstance(o, torch.Tensor) for o in out):
            raise InputError("the model's forward() returns a nested or non-tensor output")
        return [f"{OUTPUT_NAME}_{i}" for i in range(len(out))] if len(out) > 1 else [OUTPUT_NAME]
    if not isinstance(out, torch.Tensor):
        raise InputError(f"the model's forward() returns a {type(out).__name__}, not tensors")
    return [OUTPUT_NAME]


def _export(module: Any, examples: tuple[Any, ...], names: list[str], outputs: list[str],
            notes: list[str]) -> Any:  # fmt: skip
    import onnx
    import torch

    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            module,
            examples,
            input_names=names,
            output_names=outputs,
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=tuple({0: batch} for _ in names),
            verbose=False,
        )
        if program is None:
            raise ConvertError("the dynamo exporter returned nothing")
        return program.model_proto
    except Exception as err:  # the dynamo exporter raises many types; fall back below
        reason = one_line(err, limit=160)
        log.info("dynamo export failed (%s); using the TorchScript exporter", reason)
        notes.append(f"dynamo export failed ({reason}); used the TorchScript exporter")
    buffer = io.BytesIO()
    try:
        torch.onnx.export(
            module,
            examples,
            buffer,  # type: ignore[arg-type]
            input_names=names,
            output_names=outputs,
            opset_version=OPSET,
            dynamic_axes={n: {0: "batch"} for n in (*names, *outputs)},
            dynamo=False,
        )
    except Exception as err:  # the TorchScript exporter raises many types too
        raise ConvertError(f"torch.onnx.export failed: {one_line(err)}") from err
    return onnx.load_from_string(buffer.getvalue())


class TorchLoader:
    """TorchScript archives; pickled ``nn.Module`` files only with ``trust_pickle``."""

    kind: str = "pytorch"
    suffixes: tuple[str, ...] = (".pt", ".pth", ".pt2")
    modules: tuple[str, ...] = ("torch",)

    def load(self, path: Path, *, options: ConvertOptions) -> LoadedModel:
        import numpy as np
        import torch

        module, how = _load_module(path, options)
        if how != "torch.export":  # an exported program is already in inference form
            module.eval()
        shapes = _input_shapes(path, options)
        names = list(shapes)
        examples = tuple(torch.zeros(shape, dtype=torch.float32) for shape in shapes.values())
        notes: list[str] = [f"loaded as {how}"]
        try:
            outputs = _output_names(module, examples)
        except InputError:
            raise
        except Exception as err:  # forward() on the given shapes raises what the model raises
            raise InputError(
                f"{path.name}: forward() fails on inputs {shapes}: {one_line(err)}"
            ) from err
        exporter_log = logging.getLogger("torch.onnx")
        level = exporter_log.level
        exporter_log.setLevel(logging.ERROR)  # opset and torchvision notices, not our problem
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_model = _export(module, examples, names, outputs, notes)
        finally:
            exporter_log.setLevel(level)
        if len(names) > 1 or len(outputs) > 1:
            notes.append(f"{len(names)} inputs, {len(outputs)} outputs exported")

        def reference(feeds: Mapping[str, Any]) -> dict[str, Any]:
            xs = [
                torch.from_numpy(np.ascontiguousarray(feeds[name], dtype=np.float32))
                for name in names
            ]
            if how == "torch.export" and len(xs[0]) != shapes[names[0]][0]:
                # An exported program keeps the batch it was exported with: one call per batch.
                step = shapes[names[0]][0]
                parts = [
                    reference({n: feeds[n][i : i + step] for n in names})
                    for i in range(0, len(xs[0]), step)
                ]
                return {n: np.concatenate([p[n] for p in parts]) for n in outputs}
            with torch.no_grad():
                out = module(*xs)
            values = list(out) if isinstance(out, tuple | list) else [out]
            return {n: v.detach().numpy() for n, v in zip(outputs, values, strict=True)}

        return LoadedModel(
            framework="pytorch",
            onnx_model=onnx_model,
            reference=reference,
            task=options.task or "raw",
            framework_version=str(torch.__version__)[:64],
            tools={"torch": str(torch.__version__)},
            notes=notes,
        )
