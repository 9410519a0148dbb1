"""Models and files for converter tests, built in-process (no downloads)."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
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


def digits_28() -> tuple[np.ndarray, np.ndarray]:
    """Digits upsampled to 1×28×28 in [0, 1] (NCHW), with labels."""
    import cv2
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.images.astype(np.float32) / 16.0
    x = np.stack([cv2.resize(i, (28, 28), interpolation=cv2.INTER_LINEAR) for i in images])
    return x[:, None].astype(np.float32), data.target.astype(np.int64)


def small_cnn() -> Any:
    """A 3-conv + 2-FC CNN for 1×28×28 digits."""
    import torch
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    ).to(torch.float32)  # fmt: skip


def train_cnn(x: np.ndarray, y: np.ndarray, *, epochs: int = 3, seed: int = 0) -> Any:
    """Train :func:`small_cnn` with Adam (seconds on two cores); returned in eval mode."""
    import torch

    torch.manual_seed(seed)
    net = small_cnn()
    data, target = torch.from_numpy(x), torch.from_numpy(y)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(data))
        for start in range(0, len(data), 32):
            idx = order[start : start + 32]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(data[idx]), target[idx])
            loss.backward()
            optimiser.step()
    return net.eval()


def conv_onnx(*, opset: int, seed: int = 0) -> Any:
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm on [batch, 3, 16, 16], built by hand."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(8).astype(np.float32) * 0.1
    fc = rng.standard_normal((5, 8)).astype(np.float32)
    fb = np.zeros(5, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
            helper.make_node("Flatten", ["g"], ["f"], axis=1, name="flatten"),
            helper.make_node("Gemm", ["f", "FC", "FB"], ["scores"], transB=1, name="fc"),
        ],
        "old_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(fc, "FC"),
            numpy_helper.from_array(fb, "FB"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def fragile_onnx(*, seed: int = 0, features: int = 16, hidden: int = 32) -> Any:
    """An MLP whose hidden tensor ``h2`` has one channel scaled by 1e4 (and ignored afterwards).

    fp32 output does not depend on that channel, but a per-tensor int8 range for ``h2`` is set
    by it, which rounds every other channel to zero: quantizing ``h2`` breaks the model.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((features, hidden)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32) * 0.1
    scale = np.ones(hidden, np.float32)
    scale[0] = 1e4
    w2 = rng.standard_normal((hidden, 10)).astype(np.float32)
    w2[0] = 0.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["m1"], name="fc1"),
            helper.make_node("Add", ["m1", "B1"], ["a1"], name="bias1"),
            helper.make_node("Relu", ["a1"], ["h"], name="relu1"),
            helper.make_node("Mul", ["h", "S"], ["h2"], name="outlier"),
            helper.make_node("MatMul", ["h2", "W2"], ["scores"], name="fc2"),
        ],
        "fragile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(b1, "B1"),
            numpy_helper.from_array(scale, "S"),
            numpy_helper.from_array(w2, "W2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def image_tree(folder: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Write 1×H×W images in [0, 1] as 8-bit PNGs, one sub-folder per class."""
    import cv2

    for index, (image, label) in enumerate(zip(x, y, strict=True)):
        sub = folder / str(int(label))
        sub.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.rint(image[0] * 255), 0, 255).astype(np.uint8)
        cv2.imwrite(str(sub / f"{index:04d}.png"), pixels)
    return folder


REPO = Path(__file__).resolve().parents[2]
_BLOCK_MODULE = """
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Block())
"""


def convert_without(
    module: str, source_name: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """``python -m converters`` on a dummy ``source_name``, as if ``module`` were not installed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCK_MODULE.format(module=module))
    (tmp_path / source_name).write_bytes(b"x")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    args = [
        sys.executable,
        "-m",
        "converters",
        str(tmp_path / source_name),
        "-o",
        str(tmp_path / "o"),
    ]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def weight_outlier_onnx(*, seed: int = 0, features: int = 16, hidden: int = 32) -> Any:
    """An MLP broken by per-tensor int8 *weights*, which the budget loop's activation ranking
    does not see: ``W1[0, 0]`` is 1e4 but input feature 0 is always 0 (see
    :func:`weight_outlier_rows`), so fp32 ignores it while a per-tensor weight scale set by it
    rounds every other ``W1`` weight to zero. Per-channel weights survive. Activations are
    benign except ``h3``, whose channel 0 is scaled 30x: the worst-ranked tensor (not ruinous),
    and sparing it does not help."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((features, hidden)).astype(np.float32)
    w1[0, 0] = 1e4
    w2 = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    scale = np.ones(hidden, np.float32)
    scale[0] = 30.0
    w3 = rng.standard_normal((hidden, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["m1"], name="fc1"),
            helper.make_node("Relu", ["m1"], ["h1"], name="relu1"),
            helper.make_node("MatMul", ["h1", "W2"], ["m2"], name="fc2"),
            helper.make_node("Relu", ["m2"], ["h2"], name="relu2"),
            helper.make_node("Mul", ["h2", "S"], ["h3"], name="scale"),
            helper.make_node("MatMul", ["h3", "W3"], ["scores"], name="fc3"),
        ],
        "weight_outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(w2, "W2"),
            numpy_helper.from_array(scale, "S"),
            numpy_helper.from_array(w3, "W3"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def weight_outlier_rows(rows: int, *, features: int = 16, seed: int = 2) -> np.ndarray:
    """Inputs for :func:`weight_outlier_onnx`: uniform, feature 0 always 0."""
    x = np.random.default_rng(seed).uniform(-1, 1, (rows, features)).astype(np.float32)
    x[:, 0] = 0.0
    return x
