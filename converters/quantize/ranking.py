"""Which tensors suffer most from int8: ranked by simulated quantization noise.

Every candidate tensor (graph inputs and the outputs of the nodes int8 engines quantize) is
collected from the fp32 model on calibration rows, fake-quantized with a per-tensor MinMax range
(as static calibration would), and scored by the mean per-channel relative RMS error. Excluding a
tensor from quantization means leaving its producer *and* all its consumers in float (a QDQ
quantizer quantizes a tensor when either side is quantized).

A node's output also carries its int8 *weights'* error (per tensor, or per output channel for a
per-channel candidate), whichever is worse: sparing the output spares the producer, and a
weight outlier (one huge weight whose per-tensor scale rounds the rest to zero) ruins a model
while its activations look benign, so an activation-only ranking put the culprit last.
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


#: Where a weight initializer's output channels are, per op type (input index, axis).
WEIGHT_AXES: dict[str, tuple[int, int]] = {
    "Conv": (1, 0),
    "ConvTranspose": (1, 1),
    "MatMul": (1, -1),
    "Gemm": (1, -1),
}


def weight_error(weights: Any, *, axis: int, per_channel: bool, bits: int = 8) -> float:
    """Mean per-output-channel relative error of int8 weights with one scale for the tensor
    (``per_channel=False``) or one per output channel."""
    import numpy as np

    w = np.moveaxis(np.asarray(weights, dtype=np.float64), axis, 0)
    if not w.size or w.ndim < 2:
        return fake_quant_error(w, bits=bits)
    rows = w.reshape(w.shape[0], -1)
    levels = 2 ** (bits - 1) - 1
    peak = np.abs(rows).max(axis=1, keepdims=True) if per_channel else np.abs(rows).max()
    scale = np.where(peak > 0, peak / levels, 1.0)
    approx = np.clip(np.round(rows / scale), -levels, levels) * scale
    return relative_error(rows, approx, channel_axis=0)


def _weight_errors(model: ModelProto, *, per_channel: bool) -> dict[str, float]:
    """Node name → its weight initializer's int8 error (nodes with a constant weight only)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, float] = {}
    for node in model.graph.node:
        where = WEIGHT_AXES.get(node.op_type)
        if where is None or len(node.input) <= where[0] or node.input[where[0]] not in inits:
            continue
        index, axis = where
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            axis = 0
        w = numpy_helper.to_array(inits[node.input[index]])
        out[node.name] = weight_error(w, axis=axis, per_channel=per_channel)
    return out


def rank_tensors(
    model: ModelProto,
    feeds: Mapping[str, Any],
    *,
    op_types: tuple[str, ...],
    per_channel: bool = False,
) -> list[TensorRisk]:
    """Quantizable tensors, worst first, each with the nodes that must stay float to spare it;
    a node output's risk is the worse of its activation error and its producer's weight error
    (``per_channel``: the weights' scales are per output channel)."""
    return with_weights(model, activation_risks(model, feeds, op_types=op_types), per_channel)


def with_weights(model: ModelProto, risks: list[TensorRisk], per_channel: bool) -> list[TensorRisk]:
    """``risks`` (from :func:`activation_risks`) with each producer's weight error folded in,
    worst first."""
    weights = _weight_errors(model, per_channel=per_channel)
    producer = {o: n.name for n in model.graph.node for o in n.output}
    combined = [
        TensorRisk(r.tensor, max(r.error, weights.get(producer.get(r.tensor, ""), 0.0)), r.nodes)
        for r in risks
    ]
    return sorted(combined, key=lambda r: r.error, reverse=True)


def activation_risks(
    model: ModelProto, feeds: Mapping[str, Any], *, op_types: tuple[str, ...]
) -> list[TensorRisk]:
    """Every quantizable tensor's simulated int8 activation error on ``feeds`` (the costly part:
    one run of the fp32 model with every inner tensor as an output), unsorted."""
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
    return risks
