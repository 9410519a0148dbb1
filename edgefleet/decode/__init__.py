"""Decoding model outputs into boxes and masks (numpy only; light enough for the agent).

The one owner of what a ``manifest.postprocess`` layout means: the agent's postprocessors serve
results with it and the converter's fidelity measure compares candidates with it, so a box the
budget loop counts is a box a device prints.
"""

from __future__ import annotations

import numpy as np

from edgefleet.contract.postprocess import DetectorPost, MaskPost
from edgefleet.decode.boxes import Boxes, iou_matrix, nms
from edgefleet.decode.heads import DECODERS, DecodeError, Outputs, Size, candidates


def detect(post: DetectorPost, outputs: Outputs, row: int, size: Size) -> Boxes:
    """Boxes of batch row ``row`` after the score threshold and class-aware NMS, best first."""
    found = candidates(post, outputs, row, size)
    found = found.take(np.flatnonzero(found.scores >= post.score_threshold))
    return nms(found, iou_threshold=post.iou_threshold, max_detections=post.max_detections)


def class_map(post: MaskPost, outputs: Outputs, row: int) -> np.ndarray:
    """The class of every pixel ``[H, W]`` (uint8) of batch row ``row``."""
    value = np.asarray(outputs[post.output])
    result: np.ndarray
    if value.ndim == 3:  # [B, H, W]: class ids already
        result = value[row].astype(np.uint8)
        return result
    if value.ndim != 4:
        raise DecodeError(f"mask: output {post.output!r} has shape {list(value.shape)}")
    part = value[row]
    if not post.channels_last:
        part = np.moveaxis(part, 0, -1)
    if part.shape[-1] == 1:
        result = (part[..., 0] > post.mask_threshold).astype(np.uint8)
    else:
        result = part.argmax(axis=-1).astype(np.uint8)
    return result


def input_size(shape: list[int | str], layout: str | None = None) -> Size | None:
    """(width, height) of an image input ``[B, C, H, W]`` or ``[B, H, W, C]``; None if dynamic."""
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        return None
    _, a, b, c = (d if isinstance(d, int) else 0 for d in shape)
    channels_first = layout == "nchw" or (layout is None and a in (1, 3) and c not in (1, 3))
    return (c, b) if channels_first else (b, a)


__all__ = [
    "DECODERS",
    "Boxes",
    "DecodeError",
    "Size",
    "candidates",
    "class_map",
    "detect",
    "input_size",
    "iou_matrix",
    "nms",
]
