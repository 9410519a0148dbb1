"""PyTorch models: TorchScript (``torch.jit.save``) or, only with ``trust_pickle``, a whole
``nn.Module`` saved with ``torch.save(model)``, exported to ONNX.

**Security**: a pickled ``nn.Module`` is unpickled with ``weights_only=False``, which runs code
from the file; the converter refuses unless ``--trust-pickle`` is given, and warns when it is.
TorchScript archives are loaded with ``torch.jit.load``.

Export tries ``torch.onnx.export(dynamo=True)`` first (with a dynamic batch dimension) and
falls back to the TorchScript exporter, recording why. The input shape comes from
``--input-shape input=...`` or from the calibration data's first row; the input is ``input``
and the output ``output``. The source model itself is the fidelity reference.
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


def _input_shape(path: Path, options: ConvertOptions) -> list[int]:
    shape = options.input_shapes.get(INPUT_NAME)
    if shape is None:
        raise InputError(
            f"{path.name}: a PyTorch model has no declared input shape; pass "
            f"--input-shape {INPUT_NAME}=1,C,H,W or --calibration data"
        )
    return shape


def _export(module: Any, example: Any, notes: list[str]) -> Any:
    import onnx
    import torch

    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=({0: batch},),
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
            (example,),
            buffer,  # type: ignore[arg-type]
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            dynamo=False,
        )
    except Exception as err:  # the TorchScript exporter raises many types too
        raise ConvertError(f"torch.onnx.export failed: {one_line(err)}") from err
    return onnx.load_from_string(buffer.getvalue())


class TorchLoader:
    """TorchScript archives; pickled ``nn.Module`` files only with ``trust_pickle``."""

    kind: str = "pytorch"
    suffixes: tuple[str, ...] = (".pt", ".pth")
    modules: tuple[str, ...] = ("torch",)

    def load(self, path: Path, *, options: ConvertOptions) -> LoadedModel:
        import numpy as np
        import torch

        module, how = _load_module(path, options)
        module.eval()
        shape = _input_shape(path, options)
        example = torch.zeros(shape, dtype=torch.float32)
        notes: list[str] = [f"loaded as {how}"]
        exporter_log = logging.getLogger("torch.onnx")
        level = exporter_log.level
        exporter_log.setLevel(logging.ERROR)  # opset and torchvision notices, not our problem
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_model = _export(module, example, notes)
        finally:
            exporter_log.setLevel(level)
        if len(onnx_model.graph.output) != 1:
            notes.append(f"{len(onnx_model.graph.output)} outputs exported")

        def reference(feeds: Mapping[str, Any]) -> dict[str, Any]:
            x = torch.from_numpy(np.ascontiguousarray(feeds[INPUT_NAME], dtype=np.float32))
            with torch.no_grad():
                out = module(x)
            if isinstance(out, tuple | list):
                out = out[0]
            names = [o.name for o in onnx_model.graph.output]
            return {names[0]: out.detach().numpy()}

        return LoadedModel(
            framework="pytorch",
            onnx_model=onnx_model,
            reference=reference,
            task=options.task or "raw",
            framework_version=str(torch.__version__)[:64],
            tools={"torch": str(torch.__version__)},
            notes=notes,
        )
