"""Reading an ONNX graph's interface: opset, input/output names, shapes and dtypes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from converters.errors import InputError
from edgefleet.contract import TensorSpec
from edgefleet.contract.manifest import Dtype

if TYPE_CHECKING:
    from onnx import ModelProto

#: The oldest default-domain opset the converter accepts.
MIN_OPSET = 7

#: ONNX TensorProto element type → contract dtype (types the contract cannot carry are absent).
_DTYPES: dict[int, Dtype] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
}


def default_opset(model: ModelProto) -> int | None:
    """The version of the default ('' or 'ai.onnx') domain the model imports, if any."""
    versions = [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions) if versions else None


def check_opset(model: ModelProto) -> int | None:
    opset = default_opset(model)
    if opset is not None and opset < MIN_OPSET:
        raise InputError(f"ONNX opset {opset} is too old; the converter needs opset >= {MIN_OPSET}")
    return opset


def name_dynamic_dims(model: ModelProto) -> None:
    """Give every unnamed dynamic dimension of the graph's inputs and outputs a name.

    Dimension 0 becomes ``batch``; others ``<tensor>_d<i>``. Devices and the manifest then
    name the same dimension the same way.
    """
    for value in [*model.graph.input, *model.graph.output]:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        for index, dim in enumerate(tensor_type.shape.dim):
            if not dim.HasField("dim_value") and not dim.HasField("dim_param"):
                dim.dim_param = "batch" if index == 0 else f"{value.name[:50]}_d{index}"


def _spec(value: Any, *, role: str) -> TensorSpec:
    name = str(value.name)
    if not value.type.HasField("tensor_type"):
        raise InputError(f"{role} {name!r} is not a tensor (sequences and maps are not supported)")
    tensor_type = value.type.tensor_type
    dtype = _DTYPES.get(int(tensor_type.elem_type))
    if dtype is None:
        raise InputError(
            f"{role} {name!r} has ONNX element type {tensor_type.elem_type}, "
            f"not one of {sorted(set(_DTYPES.values()))}"
        )
    shape: list[int | str] = []
    if tensor_type.HasField("shape"):
        for index, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and 0 < len(dim.dim_param) <= 64:
                shape.append(str(dim.dim_param))
            else:
                shape.append("batch" if index == 0 else f"d{index}")
    if len(shape) > 8:
        raise InputError(f"{role} {name!r} has {len(shape)} dimensions; the limit is 8")
    return TensorSpec(name=name, shape=shape, dtype=dtype)


def tensor_specs(model: ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's real inputs (initializers excluded) and outputs as contract specs."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_spec(v, role="input") for v in model.graph.input if v.name not in initializers]
    outputs = [_spec(v, role="output") for v in model.graph.output]
    if not inputs or not outputs:
        raise InputError("the ONNX graph needs at least one input and one output")
    if len(inputs) > 16 or len(outputs) > 16:
        raise InputError("the ONNX graph has more than 16 inputs or outputs")
    return inputs, outputs


def drop_outputs(model: ModelProto, names: set[str]) -> None:
    """Remove graph outputs by name (nodes that fed only them are pruned by the runtime)."""
    keep = [v for v in model.graph.output if v.name not in names]
    del model.graph.output[:]
    model.graph.output.extend(keep)
