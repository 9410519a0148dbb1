"""Running a ``.tflite`` model with LiteRT, one row at a time, in float terms.

Quantized (int8/uint8) inputs are quantized from float rows with the tensor's scale and zero
point, quantized outputs are dequantized, so validators compare float with float. ``run`` has
onnxruntime's ``session.run(None, feed)`` shape so the latency gate can time it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from converters.errors import ConvertError, one_line
from edgefleet.contract import TensorSpec
from edgefleet.contract.manifest import QuantParams

_DTYPES = {"float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"}


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """TensorFlow's converter prints to file descriptor 1; keep stdout for --json (and, when
    the CLI is quiet, keep its chatter off the terminal: :func:`converters.quiet.tool_output`)."""
    from converters.quiet import tool_output

    with tool_output():
        yield


def _quant(detail: Mapping[str, Any]) -> QuantParams | None:
    params = detail.get("quantization_parameters") or {}
    scales = [float(s) for s in params.get("scales", [])]
    zeros = [int(z) for z in params.get("zero_points", [])]
    if not scales or not any(scales):
        return None
    axis = int(params.get("quantized_dimension", 0)) if len(scales) > 1 else None
    return QuantParams(scale=scales, zero_point=zeros, axis=axis)


def _spec(detail: Mapping[str, Any], *, float_view: bool) -> TensorSpec:
    import numpy as np

    dtype = np.dtype(detail["dtype"]).name
    if dtype not in _DTYPES:
        raise ConvertError(f"tensor {detail['name']!r} has dtype {dtype}")
    signature = list(detail.get("shape_signature", detail["shape"]))
    shape: list[int | str] = [
        "batch" if i == 0 and d == -1 else (int(d) if d > 0 else f"d{i}")
        for i, d in enumerate(signature)
    ]
    quant = _quant(detail) if dtype in ("int8", "uint8") else None
    if float_view and quant is not None:
        return TensorSpec(name=str(detail["name"]), shape=shape, dtype="float32")
    return TensorSpec.model_validate(
        {"name": str(detail["name"]), "shape": shape, "dtype": dtype, "quantization": quant}
    )


class TfliteRunner:
    """A LiteRT interpreter over model bytes."""

    def __init__(self, model: bytes, *, threads: int = 1, what: str = "the TFLite model") -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.what = what
        self.model = model
        self.size = len(model)
        try:
            self.interpreter = Interpreter(model_content=model, num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as err:  # LiteRT raises ValueError/RuntimeError with C++ text
            raise ConvertError(f"LiteRT cannot load {what}: {one_line(err)}") from err
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def precision(self) -> Literal["fp32", "fp16", "int8"]:
        """What the graph computes in: int8 if any tensor is int8, fp16 if any is float16."""
        import numpy as np

        kinds = {np.dtype(t["dtype"]).name for t in self.interpreter.get_tensor_details()}
        if "int8" in kinds or "uint8" in kinds:
            return "int8"
        return "fp16" if "float16" in kinds else "fp32"

    def specs(self, *, float_view: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
        return (
            [_spec(d, float_view=float_view) for d in self.inputs],
            [_spec(d, float_view=float_view) for d in self.outputs],
        )

    def set_inputs(self, feeds: Mapping[str, Any], row: int | None) -> None:
        """Set every input from float (or raw) ``feeds``, one row when ``row`` is given."""
        import numpy as np

        for detail in self.inputs:
            value = np.asarray(feeds[detail["name"]])
            if row is not None:
                value = value[row : row + 1]
            dtype = np.dtype(detail["dtype"])
            quant = _quant(detail)
            if quant is not None and dtype.kind in "iu" and value.dtype.kind == "f":
                info = np.iinfo(dtype)
                scaled = np.round(value / quant.scale[0]) + quant.zero_point[0]
                value = np.clip(scaled, info.min, info.max)
            self.interpreter.set_tensor(detail["index"], value.astype(dtype))

    def run(self, _names: object, feeds: Mapping[str, Any]) -> list[Any]:
        """One invocation on ``feeds`` as given (raw model dtypes out): the gate's timer."""
        self.set_inputs(feeds, None)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]) for d in self.outputs]

    def predict(self, feeds: Mapping[str, Any], *, raw: bool = False) -> dict[str, Any]:
        """All rows, one invocation each; outputs dequantized to float unless ``raw``."""
        import numpy as np

        rows = len(next(iter(feeds.values())))
        parts: dict[str, list[Any]] = {d["name"]: [] for d in self.outputs}
        try:
            for row in range(rows):
                self.set_inputs(feeds, row)
                self.interpreter.invoke()
                for detail in self.outputs:
                    value = self.interpreter.get_tensor(detail["index"]).copy()
                    quant = _quant(detail)
                    if not raw and quant is not None and value.dtype.kind in "iu":
                        value = (value.astype(np.float32) - quant.zero_point[0]) * quant.scale[0]
                    parts[detail["name"]].append(value)
        except (ValueError, RuntimeError) as err:
            raise ConvertError(f"LiteRT failed running {self.what}: {one_line(err)}") from err
        return {name: np.concatenate(values) for name, values in parts.items()}
