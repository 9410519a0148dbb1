"""Digits artifacts that pass their self-test but misbehave in service (for probation tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.agent.helpers import rehash
from tests.utils.artifacts import build_digits_artifact

RAW = "probabilities_raw"


def _rewire(
    artifact: Path, extra_nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]
) -> None:
    """``probabilities = probabilities_raw + 0 * penalty`` where extra_nodes compute penalty."""
    model = onnx.load(artifact / "model.onnx")
    graph = model.graph
    for node in graph.node:
        node.output[:] = [RAW if o == "probabilities" else o for o in node.output]
        node.input[:] = [RAW if i == "probabilities" else i for i in node.input]
    zero = numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero")
    graph.initializer.extend([*inits, zero])
    graph.node.extend(
        [
            *extra_nodes,
            helper.make_node("Mul", ["penalty", "zero"], ["penalty0"]),
            helper.make_node("Add", [RAW, "penalty0"], ["probabilities"]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, artifact / "model.onnx")
    rehash(artifact)


def nan_on_real_inputs(out: Path, *, version: str) -> Path:
    """NaN for any input row whose sum is below half the smallest self-test row sum
    (a blank image), finite for the self-test rows: ``Log(sum(x) - k)``."""
    artifact = build_digits_artifact(out, version=version, seed=1)
    sample = np.load(artifact / "selftest.npz")["input/input"]
    k = np.array(float(sample.sum(axis=1).min()) / 2, dtype=np.float32)
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceSum", ["input", "axes"], ["row_sum"], keepdims=1),
        helper.make_node("Sub", ["row_sum", "k"], ["shifted"]),
        helper.make_node("Log", ["shifted"], ["penalty"]),
    ]
    _rewire(artifact, nodes, [axes, numpy_helper.from_array(k, "k")])
    return artifact


def slow(out: Path, *, version: str, width: int = 1024, depth: int = 60) -> Path:
    """Same answers, plus a chain of ``depth`` width×width MatMuls whose result is multiplied
    by zero (values shrink each step, so nothing overflows into Inf)."""
    artifact = build_digits_artifact(out, version=version, seed=1)
    rng = np.random.default_rng(0)
    w0 = (rng.random((64, width)) / width).astype(np.float32)
    w = (rng.random((width, width)) / width).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "w0"], ["h0"])]
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes.append(helper.make_node("ReduceSum", [f"h{depth}", "axes"], ["penalty"], keepdims=1))
    inits = [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w, "w"), axes]
    _rewire(artifact, nodes, inits)
    return artifact
