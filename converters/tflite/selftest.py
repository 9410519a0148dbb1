"""The TFLite artifact's self-test: one invocation's inputs and outputs, with a tolerance
derived from the data (see :func:`tflite_selftest`)."""

from __future__ import annotations

import io
from typing import Any

from converters.errors import ConvertError, one_line
from converters.tflite.runner import TfliteRunner

#: Float self-test tolerance floor, relative to the largest output (float32 rounding).
FLOAT_ATOL = 1e-5
FLOAT_RTOL = 1e-4
#: Observed cross-kernel differences are multiplied by this for the tolerance.
KERNEL_MARGIN = 4.0


def tflite_selftest(runner: TfliteRunner, feeds: dict[str, Any]) -> tuple[bytes, float, float]:
    """One invocation's inputs (in the model's own dtypes and batch) and raw outputs.

    One invocation, because a device feeds the stored inputs in one run: four rows stacked for
    a batch-1 model were refused by every device (issue #12). The float tolerance is derived
    from the data: the same inputs are run once more with LiteRT's reference kernels (no
    XNNPACK), and the tolerance is :data:`KERNEL_MARGIN` times the largest difference seen,
    never below float32 rounding of the largest output (it was 2e-2 x max, atol 3.40 on a
    face detector). Int8 outputs keep 2 quantization steps.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    runner.set_inputs(feeds, 0)
    arrays = {
        f"input/{d['name']}": runner.interpreter.get_tensor(d["index"]).copy()
        for d in runner.inputs
    }
    try:
        runner.interpreter.invoke()
        outputs = {
            d["name"]: runner.interpreter.get_tensor(d["index"]).copy() for d in runner.outputs
        }
    except (ValueError, RuntimeError) as err:
        raise ConvertError(f"LiteRT failed running the self-test rows: {one_line(err)}") from err
    try:
        reference = Interpreter(
            model_content=runner.model,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        reference.allocate_tensors()
        for d in reference.get_input_details():
            reference.set_tensor(d["index"], arrays[f"input/{d['name']}"])
        reference.invoke()
        details = reference.get_output_details()
        other = {d["name"]: reference.get_tensor(d["index"]) for d in details}
    except (ValueError, RuntimeError):
        # A custom op only XNNPACK implements (MediaPipe's Convolution2DTransposeBias): no
        # second opinion, the float32 floor stands.
        other = {}
    quantized = any(v.dtype.kind in "iu" for v in outputs.values())
    scale = max([1.0, *(float(np.abs(v).max()) for v in outputs.values() if v.dtype.kind == "f")])
    spread = max(
        [0.0]
        + [
            float(np.abs(v.astype(np.float64) - other[k]).max())
            for k, v in outputs.items()
            if v.dtype.kind == "f" and k in other and other[k].shape == v.shape
        ]
    )
    arrays.update({f"output/{k}": v for k, v in outputs.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    if quantized:
        return buf.getvalue(), 2.0, 0.0
    return buf.getvalue(), max(FLOAT_ATOL * scale, KERNEL_MARGIN * spread), FLOAT_RTOL
