"""Models and files for converter tests, built in-process (no downloads)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def linear_onnx(
    *,
    opset: int,
    batch: int | str = "batch",
    features: int = 8,
    classes: int = 3,
    seed: int = 0,
    ir_version: int | None = None,
) -> Any:
    """A tiny MatMul → Add → Softmax classifier with an ArgMax 'label', as an onnx ModelProto."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((features, classes)).astype(np.float32)
    bias = rng.standard_normal(classes).astype(np.float32)
    initializers = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])]
    if ir_version is not None and ir_version < 4:
        # Before IR 4 every initializer must also be a graph input.
        inputs += [
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [features, classes]),
            helper.make_tensor_value_info("B", TensorProto.FLOAT, [classes]),
        ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["z0"]),
            helper.make_node("Add", ["z0", "B"], ["z"]),
            helper.make_node("Softmax", ["z"], ["scores"], axis=1),
            helper.make_node("ArgMax", ["z"], ["label"], axis=1, keepdims=0),
        ],
        "tiny_linear",
        inputs,
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [batch]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, classes]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version if ir_version is not None else 8
    return model


def save_onnx(model: Any, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def write_npz(path: Path, **arrays: Any) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def write_pickle(path: Path, obj: Any) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def zip_bomb_npz(path: Path, *, unpacked: int) -> Path:
    """An .npz whose member claims ``unpacked`` bytes but compresses to almost nothing."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", b"\x00" * unpacked)
    return path


def leftovers(parent: Path, name: str) -> list[str]:
    """Entries of ``parent`` that a conversion into ``parent/name`` may have created."""
    return sorted(
        p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")
    )
