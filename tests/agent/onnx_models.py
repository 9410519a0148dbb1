"""Tiny real ONNX models built with onnx.helper for postprocessing, pipeline and bench tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 13)]


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def _input_dependent(outputs: dict[str, np.ndarray], input_shape: list[int]) -> bytes:
    """Outputs = constants + 0 × mean(input): fixed predictions that still run the input."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    infos = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "nothing"], [name]))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes,
        "fixed_predictions",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
        infos,
        initializer=inits,
    )
    return _model(graph)


def yolo_model(predictions: np.ndarray, size: int) -> bytes:
    """Input images [1,3,size,size]; output ``output0`` = ``predictions`` (YOLO layout)."""
    return _input_dependent({"output0": predictions}, [1, 3, size, size])


def ssd_model(boxes: np.ndarray, scores: np.ndarray, size: int) -> bytes:
    """Input images [1,3,size,size]; outputs ``boxes`` [1,N,4] and ``scores`` [1,N,C]."""
    return _input_dependent({"boxes": boxes, "scores": scores}, [1, 3, size, size])


def bright_segmenter(height: int, width: int) -> bytes:
    """Gray [1,1,H,W] in 0..1 → logits [1,2,H,W]: class 1 where the pixel is brighter than 0.5."""
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["images", "half"], ["bright"]),
            helper.make_node("Neg", ["bright"], ["dark"]),
            helper.make_node("Concat", ["dark", "bright"], ["logits"], axis=1),
        ],
        "bright_segmenter",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 1, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, height, width])],
        initializer=[half],
    )
    return _model(graph)


def conv_classifier(size: int, channels: int, classes: int = 10, seed: int = 0) -> bytes:
    """[batch,3,size,size] → Conv(3→c) → Relu → Conv(c→2c, s2) → Relu → GAP → Gemm → Softmax."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.2, (channels, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (channels * 2, channels, 3, 3)).astype(np.float32)
    fc = rng.normal(0, 0.1, (channels * 2, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["flat"]),
            helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        ],
        "conv_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(fc, "fc"),
        ],
    )
    return _model(graph)


def mlp(features: int, hidden: int, classes: int = 10, seed: int = 0) -> bytes:
    """[batch, features] → Gemm → Relu → Gemm → Softmax (a sub-100 µs model)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.1, (features, hidden)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (hidden, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return _model(graph)
