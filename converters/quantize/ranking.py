"""Which tensors suffer most from int8: ranked by simulated quantization noise.

Every candidate tensor (graph inputs and the outputs of the nodes int8 engines quantize) is
collected from the fp32 model on calibration rows, fake-quantized with a per-tensor MinMax range
(as static calibration would), and scored by the mean per-channel relative RMS error. Excluding a
tensor from quantization means leaving its producer *and* all its consumers in float (a QDQ
quantizer quantizes a tensor when either side is quantized).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from converters.evaldata import batch_of
from converters.onnx_graph import tensor_specs
from converters.runtime import make_session, run_batched

if TYPE_CHECKING:
    from onnx import ModelProto


@dataclass(frozen=True)
class TensorRisk:
    tensor: str
    error: float
    nodes: tuple[str, ...]


def fake_quant_error(values: Any, *, bits: int = 8) -> float:
    """:func:`relative_error` of per-tensor MinMax int8 (as static calibration would set it)."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if not x.size:
        return 0.0
    peak = float(np.abs(x).max())
    if peak == 0:
        return 0.0
    levels = 2 ** (bits - 1) - 1
    scale = peak / levels
    return relative_error(x, np.clip(np.round(x / scale), -levels, levels) * scale)


def relative_error(values: Any, approx: Any, *, channel_axis: int = 1) -> float:
    """Mean over channels of the relative RMS error of ``approx`` against ``values``.

    Per channel, because one outlier channel dominates a whole-tensor norm while the real
    damage is to the other channels, which its range rounds to zero. Channels are axis 1 for
    ONNX (NCHW) and the last axis for TFLite (NHWC, and a dense layer's features).
    """
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if not x.size:
        return 0.0
    noise = x - np.asarray(approx, dtype=np.float64).reshape(x.shape)
    if x.ndim >= 2:
        channels = np.moveaxis(x, channel_axis, 0).reshape(x.shape[channel_axis], -1)
        noise = np.moveaxis(noise, channel_axis, 0).reshape(channels.shape)
    else:
        channels, noise = x[None], noise[None]
    norms = np.sqrt(np.mean(channels**2, axis=1))
    errors = np.sqrt(np.mean(noise**2, axis=1))
    live = norms > 0
    return float(np.mean(errors[live] / norms[live])) if live.any() else 0.0


def rank_tensors(
    model: ModelProto, feeds: Mapping[str, Any], *, op_types: tuple[str, ...]
) -> list[TensorRisk]:
    """Quantizable tensors, worst first, each with the nodes that must stay float to spare it."""
    import onnx

    graph = model.graph
    consumers: dict[str, list[str]] = {}
    producer: dict[str, str] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
        for name in node.output:
            producer[name] = node.name
    wanted = [n for n in graph.node if n.op_type in op_types]
    tensors = [o for n in wanted for o in n.output if o]
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = make_session(probe.SerializeToString(), optimize=False, what="the probe model")
    # In the model's own batch: a fixed-batch-1 model refuses 64 rows at once (issue #12).
    specs, _ = tensor_specs(model)
    values = run_batched(session, feeds, batch=batch_of(specs), what="the probe model")
    values.update({k: v for k, v in feeds.items() if k in inputs})
    risks = []
    for name in [*inputs, *tensors]:
        if name not in values:
            continue
        nodes = [producer[name]] if name in producer else []
        nodes += consumers.get(name, [])
        risks.append(TensorRisk(name, fake_quant_error(values[name]), tuple(n for n in nodes if n)))
    return sorted(risks, key=lambda r: r.error, reverse=True)
