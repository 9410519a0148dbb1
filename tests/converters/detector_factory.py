"""A tiny hand-built anchor-free detector for the converter's task tests (no training).

Three heads (strides 8/16/32) on a ``[batch, 3, 64, 64]`` image in the YOLOv8 layout
``[batch, 5, 84]`` (``cx, cy, w, h, score``). Per head a box Conv (kernel = stride) plus a
constant grid puts a 4-8 px square at each cell centre, moved by the patch's green mean; a
score Conv gives the patch's red mean. The stride-8 box head carries a fifth channel,
``outlier`` x the red mean, sliced away before the output: fp32 boxes do not depend on it, but
a per-tensor int8 range set by it rounds box corners by pixels, so small boxes move
(``fragile_onnx`` for boxes). Scores stay on their own path and survive int8.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIZE = 64
STRIDES = (8, 16, 32)
N = sum((SIZE // s) ** 2 for s in STRIDES)  # 84


def yolo_detector_onnx(*, outlier: float = 600.0) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, boxes, scores = [], [], [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    for s in STRIDES:
        g, mean = SIZE // s, 1.0 / (s * s)
        w = np.zeros((5, 3, s, s), np.float32)
        w[0, 1] = w[1, 1] = mean * s / 2  # centre moved by green mean x half a cell
        w[2, 2] = w[3, 2] = mean * 4  # side: 4 + 4 x blue mean
        w[4, 0] = mean * outlier if s == 8 else 0.0
        grid = np.zeros((1, 5, g, g), np.float32)
        grid[0, 0] = (np.arange(g)[None, :] + 0.5) * s - s / 4
        grid[0, 1] = (np.arange(g)[:, None] + 0.5) * s - s / 4
        grid[0, 2:4] = 4.0
        ws = np.zeros((1, 3, s, s), np.float32)
        ws[0, 0] = mean
        nodes += [
            helper.make_node(
                "Conv",
                ["x", const(f"W{s}", w)],
                [f"c{s}"],
                strides=[s, s],
                kernel_shape=[s, s],
                name=f"box{s}",
            ),  # fmt: skip
            helper.make_node("Add", [f"c{s}", const(f"G{s}", grid)], [f"a{s}"], name=f"grid{s}"),
            helper.make_node(
                "Reshape",
                [f"a{s}", const(f"S{s}", np.array([0, 5, g * g]))],
                [f"r{s}"],
                name=f"flat{s}",
            ),  # fmt: skip
            helper.make_node(
                "Conv",
                ["x", const(f"WS{s}", ws)],
                [f"k{s}"],
                strides=[s, s],
                kernel_shape=[s, s],
                name=f"score{s}",
            ),  # fmt: skip
            helper.make_node(
                "Reshape",
                [f"k{s}", const(f"T{s}", np.array([0, 1, g * g]))],
                [f"q{s}"],
                name=f"sflat{s}",
            ),  # fmt: skip
        ]
        boxes.append(f"r{s}")
        scores.append(f"q{s}")
    nodes += [
        helper.make_node("Concat", boxes, ["all"], axis=2, name="concat_boxes"),
        helper.make_node(
            "Slice",
            [
                "all",
                const("start", np.array([0])),
                const("end", np.array([4])),
                const("axis", np.array([1])),
            ],  # fmt: skip
            ["xywh"],
            name="drop_outlier",
        ),
        helper.make_node("Concat", scores, ["conf"], axis=2, name="concat_scores"),
        helper.make_node("Concat", ["xywh", "conf"], ["pred"], axis=1, name="concat_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_yolo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("pred", TensorProto.FLOAT, ["batch", 5, N])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def scenes(rows: int, *, seed: int = 0) -> np.ndarray:
    """Dark images with a few bright red 8x8 patches (the objects) on stride-8 cells."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.1, (rows, 3, SIZE, SIZE)).astype(np.float32)
    for r in range(rows):
        for _ in range(int(rng.integers(2, 6))):
            cy, cx = (int(v) * 8 for v in rng.integers(0, SIZE // 8, 2))
            x[r, 0, cy : cy + 8, cx : cx + 8] = rng.uniform(0.6, 1.0)
            x[r, 1:, cy : cy + 8, cx : cx + 8] = rng.uniform(0, 1, (2, 1, 1))
    return x
