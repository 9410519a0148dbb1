"""Detector heads → candidate boxes in model-input pixels, one decoder per ``layout``.

Each decoder reads the outputs its :mod:`edgefleet.contract.postprocess` struct names and
returns every candidate (before the score threshold and NMS); a registry maps the layout to it.
Shape mismatches raise :class:`DecodeError` with the numbers, so a model that does not fit its
recorded layout fails at load rather than printing nonsense boxes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from edgefleet.contract.postprocess import (
    DetectorPost,
    GflPost,
    SsdAnchorsPost,
    SsdPost,
    YoloV5Post,
    YoloV8Post,
    YoloXPost,
    layout_of,
)
from edgefleet.decode.boxes import Boxes, cxcywh_to_xyxy

Size = tuple[int, int]  # (width, height) of the model input in pixels
Outputs = Mapping[str, np.ndarray]


class DecodeError(ValueError):
    """The outputs do not have the shape the recorded layout needs."""


def _row(outputs: Outputs, name: str, row: int, ndim: int = 2) -> np.ndarray:
    value = np.asarray(outputs[name])
    if value.ndim != ndim + 1:
        raise DecodeError(f"output {name!r} has shape {list(value.shape)}, want {ndim + 1} dims")
    part: np.ndarray = value[row].astype(np.float32, copy=False)
    return part


def _best(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[1] == 0:
        raise DecodeError("the output holds no class scores")
    classes = scores.argmax(axis=1)
    best: np.ndarray = scores[np.arange(len(classes)), classes]
    return best, classes.astype(np.int64)


def _activate(post: DetectorPost, scores: np.ndarray) -> np.ndarray:
    if post.score_activation == "sigmoid":
        activated: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(scores, -60, 60)))
        return activated
    return scores


def grid_centres(size: Size, strides: list[int], offset: float, per_cell: list[int]) -> np.ndarray:
    """Cell centres ``[N, 3]`` (cx, cy, stride) in pixels, row-major per stride, each cell
    repeated ``per_cell`` times; a grid is ``ceil(side / stride)`` cells wide."""
    w, h = size
    parts = []
    for stride, count in zip(strides, per_cell, strict=True):
        gw, gh = math.ceil(w / stride), math.ceil(h / stride)
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
        cells = np.repeat(cells, count, axis=0)
        centre = (cells + offset) * stride
        parts.append(np.concatenate([centre, np.full((len(cells), 1), stride, np.float32)], 1))
    return np.concatenate(parts, axis=0)


def _yolov8(post: YoloV8Post, outputs: Outputs, row: int, size: Size) -> Boxes:
    pred = _row(outputs, post.output, row)
    if post.features_first:
        pred = pred.T
    scores, classes = _best(_activate(post, pred[:, 4:]))
    return Boxes(cxcywh_to_xyxy(pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]), scores, classes)


def _yolov5(post: YoloV5Post, outputs: Outputs, row: int, size: Size) -> Boxes:
    pred = _row(outputs, post.output, row)
    both = _activate(post, pred[:, 4:])
    scores, classes = _best(both[:, 1:] * both[:, :1])
    return Boxes(cxcywh_to_xyxy(pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]), scores, classes)


def _yolox(post: YoloXPost, outputs: Outputs, row: int, size: Size) -> Boxes:
    pred = _row(outputs, post.output, row)
    grid = grid_centres(size, post.strides, 0.0, [1] * len(post.strides))
    if len(grid) != len(pred):
        raise DecodeError(
            f"yolox: output {post.output!r} has {len(pred)} rows; strides {post.strides} on a "
            f"{size[0]}x{size[1]} input make {len(grid)}"
        )
    stride = grid[:, 2]
    cx = (pred[:, 0] + grid[:, 0] / stride) * stride
    cy = (pred[:, 1] + grid[:, 1] / stride) * stride
    w = np.exp(np.clip(pred[:, 2], -20, 20)) * stride
    h = np.exp(np.clip(pred[:, 3], -20, 20)) * stride
    both = _activate(post, pred[:, 4:])
    scores, classes = _best(both[:, 1:] * both[:, :1])
    return Boxes(cxcywh_to_xyxy(cx, cy, w, h), scores, classes)


def _gfl(post: GflPost, outputs: Outputs, row: int, size: Size) -> Boxes:
    bins = post.reg_max + 1
    boxes, scores = [], []
    for stride, score_name, box_name in zip(
        post.strides, post.score_outputs, post.box_outputs, strict=True
    ):
        score = _row(outputs, score_name, row)
        dist = _row(outputs, box_name, row)
        centre = grid_centres(size, [stride], 0.5, [1])
        if dist.shape[1] != 4 * bins or len(dist) != len(centre) or len(score) != len(centre):
            raise DecodeError(
                f"gfl stride {stride}: scores {list(score.shape)}, boxes {list(dist.shape)}; "
                f"want [{len(centre)}, C] and [{len(centre)}, {4 * bins}] on a "
                f"{size[0]}x{size[1]} input"
            )
        logits = dist.reshape(-1, 4, bins)
        prob = np.exp(logits - logits.max(axis=2, keepdims=True))
        prob /= prob.sum(axis=2, keepdims=True)
        ltrb = (prob * np.arange(bins, dtype=np.float32)).sum(axis=2) * stride
        cx, cy = centre[:, 0], centre[:, 1]
        boxes.append(
            np.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], 1)
        )
        scores.append(score)
    best, classes = _best(_activate(post, np.concatenate(scores)))
    return Boxes(np.concatenate(boxes).astype(np.float32), best, classes)


def _ssd(post: SsdPost, outputs: Outputs, row: int, size: Size) -> Boxes:
    boxes = _row(outputs, post.boxes, row)
    scores = _activate(post, _row(outputs, post.scores, row))
    if post.background:
        scores = scores[:, 1:]
    if boxes.shape[1] != 4 or len(boxes) != len(scores):
        raise DecodeError(f"ssd: boxes {list(boxes.shape)} and scores {list(scores.shape)}")
    if post.box_order == "yxyx":
        boxes = boxes[:, [1, 0, 3, 2]]
    w, h = size
    best, classes = _best(scores)
    return Boxes(boxes * np.array([w, h, w, h], np.float32), best, classes)


def _ssd_anchors(post: SsdAnchorsPost, outputs: Outputs, row: int, size: Size) -> Boxes:
    raw = _row(outputs, post.boxes, row)
    scores = _activate(post, _row(outputs, post.scores, row))
    grid = post.anchors
    anchors = grid_centres(size, grid.strides, grid.offset, grid.per_cell)
    if len(anchors) != len(raw) or len(raw) != len(scores) or raw.shape[1] < 4:
        raise DecodeError(
            f"ssd-anchors: boxes {list(raw.shape)}, scores {list(scores.shape)}; the anchor "
            f"grid makes {len(anchors)} on a {size[0]}x{size[1]} input"
        )
    w, h = size
    sx, sy, sw, sh = post.box_scale
    # Anchors of fixed size 1 (normalised): centres move by raw/scale, sizes are raw/scale.
    cx = raw[:, 0] / sx * w + anchors[:, 0]
    cy = raw[:, 1] / sy * h + anchors[:, 1]
    bw = raw[:, 2] / sw * w
    bh = raw[:, 3] / sh * h
    best, classes = _best(scores)
    return Boxes(cxcywh_to_xyxy(cx, cy, bw, bh), best, classes)


Decoder = Callable[[DetectorPost, Outputs, int, Size], Boxes]
DECODERS: dict[str, Decoder] = {
    "yolov8": _yolov8,  # type: ignore[dict-item]  # each takes its own struct
    "yolov5": _yolov5,  # type: ignore[dict-item]
    "yolox": _yolox,  # type: ignore[dict-item]
    "gfl": _gfl,  # type: ignore[dict-item]
    "ssd": _ssd,  # type: ignore[dict-item]
    "ssd-anchors": _ssd_anchors,  # type: ignore[dict-item]
}


def candidates(post: DetectorPost, outputs: Outputs, row: int, size: Size) -> Boxes:
    """Every box the head proposes for batch row ``row`` (no threshold, no NMS)."""
    return DECODERS[layout_of(post)](post, outputs, row, size)
