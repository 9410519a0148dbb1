"""``manifest.postprocess``: what a device does with a model's outputs, recorded by the converter.

A tagged union on ``layout``: each layout names the outputs it reads and the numbers its decoder
needs (strides, anchors, box encoding), so an artifact needs no agent config for its task. The
decoders themselves are in :mod:`edgefleet.decode` (numpy only), used by the agent and by the
converter's fidelity measure alike. Every field is bounded: a manifest is untrusted input.

Layouts (``[B, ...]`` is the batch):

- ``yolov8``: one output ``[B, 4+C, N]`` (or ``[B, N, 4+C]``), boxes ``cx, cy, w, h`` in
  model-input pixels, class scores (anchor-free, already decoded).
- ``yolov5``: one output ``[B, N, 5+C]``, decoded ``cx, cy, w, h`` + objectness + class scores.
- ``yolox``: one output ``[B, N, 5+C]`` straight from the heads: ``(xy + grid) * stride``,
  ``exp(wh) * stride``, one box per cell of each stride's grid (``N = sum (H/s)(W/s)``).
- ``gfl``: PP-PicoDet/GFL multi-head: per stride a score output ``[B, n_s, C]`` and a box
  output ``[B, n_s, 4 (reg_max+1)]`` of distance distributions (softmax, expectation, x stride).
- ``ssd``: decoded boxes ``[B, N, 4]`` (normalised corners) + scores ``[B, N, C]``.
- ``ssd-anchors``: box regressions ``[B, N, >=4]`` relative to a grid of anchors (MediaPipe
  style: ``cx = raw / scale * anchor_w + anchor_cx``) + score logits ``[B, N, C]``.
- ``mask``: a segmentation output ``[B, C, H, W]``, ``[B, H, W, C]`` or ``[B, H, W]``; one channel
  is a probability (or logit) map cut at ``mask_threshold``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, field

from edgefleet.contract.common import Strict

OutputName = Annotated[str, Meta(min_length=1, max_length=256, description="An output's name.")]
Stride = Annotated[int, Meta(ge=1, le=1024, description="Pixels of input per grid cell.")]
Strides = Annotated[list[Stride], Meta(min_length=1, max_length=8, description="Head strides.")]
Score = Annotated[float, Meta(ge=0, le=1, description="Minimum score a box needs.")]
Iou = Annotated[float, Meta(gt=0, le=1, description="NMS overlap limit.")]
MaxDetections = Annotated[int, Meta(ge=1, le=10_000, description="Boxes kept per input.")]


class _Detector(Strict, frozen=True, kw_only=True):
    score_threshold: Score = 0.25
    iou_threshold: Iou = 0.45
    max_detections: MaxDetections = 100
    #: Decoded boxes are in these (model-input) pixels; the agent maps them to the source image.
    score_activation: Annotated[
        Literal["none", "sigmoid"], Meta(description="Applied to the raw class scores.")
    ] = "none"


class YoloV8Post(_Detector, tag_field="layout", tag="yolov8", frozen=True, kw_only=True):
    """Anchor-free, decoded: ``[B, 4+C, N]`` (``features_first``) or ``[B, N, 4+C]``."""

    output: OutputName
    features_first: Annotated[bool, Meta(description="True for the [B, 4+C, N] layout.")] = True


class YoloV5Post(_Detector, tag_field="layout", tag="yolov5", frozen=True, kw_only=True):
    """Anchor-based, decoded: ``[B, N, 5+C]`` with objectness multiplied into class scores."""

    output: OutputName


class YoloXPost(_Detector, tag_field="layout", tag="yolox", frozen=True, kw_only=True):
    """Raw YOLOX heads concatenated: ``[B, N, 5+C]``, one box per grid cell per stride."""

    output: OutputName
    strides: Strides = field(default_factory=lambda: [8, 16, 32])


class GflPost(_Detector, tag_field="layout", tag="gfl", frozen=True, kw_only=True):
    """PP-PicoDet / GFL multi-head: per stride scores ``[B, n, C]`` + box distributions."""

    score_outputs: Annotated[list[OutputName], Meta(min_length=1, max_length=8)]
    box_outputs: Annotated[list[OutputName], Meta(min_length=1, max_length=8)]
    strides: Strides
    reg_max: Annotated[int, Meta(ge=0, le=64, description="Distribution bins - 1.")] = 7

    def __post_init__(self) -> None:
        super().__post_init__()
        if not len(self.score_outputs) == len(self.box_outputs) == len(self.strides):
            raise ValueError("gfl needs one score output and one box output per stride")


class SsdPost(_Detector, tag_field="layout", tag="ssd", frozen=True, kw_only=True):
    """Decoded boxes ``[B, N, 4]`` (corners normalised to 0..1) + scores ``[B, N, C]``."""

    boxes: OutputName
    scores: OutputName
    box_order: Annotated[Literal["xyxy", "yxyx"], Meta(description="Corner order.")] = "xyxy"
    background: Annotated[bool, Meta(description="Score column 0 is background.")] = False


class AnchorGrid(Strict, frozen=True, kw_only=True):
    """SSD anchors on a grid per stride (MediaPipe ``SsdAnchorsCalculator``, fixed size 1)."""

    strides: Strides
    per_cell: Annotated[
        list[Annotated[int, Meta(ge=1, le=32)]],
        Meta(min_length=1, max_length=8, description="Anchors per grid cell, one per stride."),
    ]
    offset: Annotated[float, Meta(ge=0, le=1, description="Anchor centre within a cell.")] = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.per_cell) != len(self.strides):
            raise ValueError("anchors.per_cell needs one count per stride")


class SsdAnchorsPost(_Detector, tag_field="layout", tag="ssd-anchors", frozen=True, kw_only=True):
    """Regressions ``[B, N, >=4]`` (``cx, cy, w, h`` first) against ``anchors`` + scores."""

    boxes: OutputName
    scores: OutputName
    anchors: AnchorGrid
    box_scale: Annotated[
        list[Annotated[float, Meta(gt=0, le=1e6)]],
        Meta(min_length=4, max_length=4, description="x, y, w, h divisors of the regressions."),
    ]


class MaskPost(Strict, tag_field="layout", tag="mask", frozen=True, kw_only=True):
    """A class per pixel; a single channel is cut at ``mask_threshold``."""

    output: OutputName
    channels_last: Annotated[bool, Meta(description="[B, H, W, C] rather than [B, C, H, W].")]
    mask_threshold: Annotated[
        float, Meta(ge=-1e6, le=1e6, description="One channel: pixel is class 1 above this.")
    ] = 0.5


Postprocess = YoloV8Post | YoloV5Post | YoloXPost | GflPost | SsdPost | SsdAnchorsPost | MaskPost
DetectorPost = YoloV8Post | YoloV5Post | YoloXPost | GflPost | SsdPost | SsdAnchorsPost
LAYOUTS: tuple[str, ...] = ("yolov8", "yolov5", "yolox", "gfl", "ssd", "ssd-anchors", "mask")
#: The task each layout serves.
TASK_OF_LAYOUT: dict[str, str] = dict.fromkeys(LAYOUTS[:-1], "detection") | {"mask": "segmentation"}


def layout_of(post: Postprocess) -> str:
    """The ``layout`` tag of ``post``."""
    tag = type(post).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def output_names(post: Postprocess) -> list[str]:
    """The outputs a layout reads (the manifest checks they exist)."""
    if isinstance(post, GflPost):
        return [*post.score_outputs, *post.box_outputs]
    if isinstance(post, SsdPost | SsdAnchorsPost):
        return [post.boxes, post.scores]
    return [post.output]
