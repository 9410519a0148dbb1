"""ONNX files: checked, opset-gated, and used as their own reference."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.errors import InputError, one_line
from converters.evaldata import batch_of
from converters.onnx_graph import check_opset, tensor_specs
from converters.options import ConvertOptions
from converters.runtime import make_session, run_batched
from converters.sources.base import LoadedModel


def _has_external_data(model: Any) -> bool:
    from onnx import TensorProto

    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
    return any(t.data_location == TensorProto.EXTERNAL for t in tensors)


class OnnxLoader:
    """A self-contained ``.onnx`` file (external data is refused)."""

    kind: str = "onnx"
    suffixes: tuple[str, ...] = (".onnx",)
    modules: tuple[str, ...] = ("onnx",)

    def load(self, path: Path, *, options: ConvertOptions) -> LoadedModel:
        import onnx

        try:
            # Never follow external-data paths from an untrusted file.
            model = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # protobuf and onnx raise several unrelated types
            raise InputError(f"{path.name} is not a readable ONNX model: {one_line(err)}") from err
        if _has_external_data(model):
            raise InputError(f"{path.name} keeps tensors in external files; that is not supported")
        check_opset(model)
        try:
            onnx.checker.check_model(model)
        except (onnx.checker.ValidationError, ValueError) as err:
            raise InputError(f"{path.name} fails the ONNX checker: {one_line(err)}") from err
        inputs, _ = tensor_specs(model)
        batch = batch_of(inputs)
        original = make_session(
            model.SerializeToString(),
            optimize=False,
            error=InputError,
            what=path.name,
        )

        def reference(feeds: Mapping[str, Any]) -> dict[str, Any]:
            return run_batched(original, feeds, batch=batch, what=f"the original {path.name}")

        producer = f"{model.producer_name} {model.producer_version}".strip()
        return LoadedModel(
            framework="onnx",
            onnx_model=model,
            reference=reference,
            task=options.task or "raw",
            framework_version=producer[:64] or None,
            labels=[],
            tools={},
        )
