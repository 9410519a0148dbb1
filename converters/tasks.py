"""What a model's outputs mean: the task and ``manifest.postprocess``, from ``--task`` /
``--postprocess`` or recognised from the graph's (fixed) output shapes.

Recognised on their own (no flags), because the shapes pin them down:

- ``gfl`` (PP-PicoDet-like multi-head): pairs of outputs ``[1, n_s, C]`` + ``[1, n_s, 4(r+1)]``
  whose row counts are the grid cells of strides 8/16/32/64 on the input;
- ``yolox``: one ``[1, N, 5+C]`` with N = the grid cells of strides 8/16/32 (one per cell);
- ``yolov5``: one ``[1, N, 5+C]`` with N = three anchors per cell of strides 8/16/32;
- ``yolov8``: one ``[1, 4+C, N]`` with N = the grid cells of strides 8/16/32;
- ``ssd-anchors``: ``[1, N, K>=4]`` + ``[1, N, C]`` with N = MediaPipe BlazeFace anchors
  (strides 8/16, 2 and 6 per cell);
- ``mask``: a single-channel ``[1, 1, H, W]`` / ``[1, H, W, 1]`` map at the input's size.

Decoded SSD outputs (``[1, N, 4]`` + ``[1, N, C]``) are not recognised (the corner order cannot
be read from shapes): ``--postprocess ssd`` sets them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from converters.errors import InputError
from converters.options import ConvertOptions, ConvertTask
from converters.quantize.task_metrics import TaskDecode
from edgefleet.contract import TensorSpec
from edgefleet.contract.postprocess import (
    AnchorGrid,
    GflPost,
    MaskPost,
    Postprocess,
    SsdAnchorsPost,
    SsdPost,
    YoloV5Post,
    YoloV8Post,
    YoloXPost,
)
from edgefleet.decode import Size, input_size

POSTPROCESS_CHOICES = ("yolov8", "yolov5", "yolox", "gfl", "picodet", "ssd", "ssd-anchors", "mask")
YOLO_STRIDES = (8, 16, 32)
GFL_STRIDES = (8, 16, 32, 64)
#: MediaPipe SSD anchor grids (strides, anchors per cell) seen in shipped models.
ANCHOR_GRIDS: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (((8, 16), (2, 6)),)


@dataclass(frozen=True)
class Thresholds:
    score: float | None = None
    iou: float | None = None


def _cells(size: Size, stride: int) -> int:
    w, h = size
    return -(-w // stride) * -(-h // stride)


def _static(spec: TensorSpec) -> list[int] | None:
    """The dims with a dynamic batch read as 1; None when any other dim is dynamic."""
    dims = [d if isinstance(d, int) else 1 if i == 0 else 0 for i, d in enumerate(spec.shape)]
    return dims if all(dims) else None


def _three(outputs: list[TensorSpec]) -> list[tuple[TensorSpec, list[int]]]:
    found = []
    for spec in outputs:
        dims = _static(spec)
        if dims is not None and len(dims) == 3:
            found.append((spec, dims))
    return found


def _gfl(size: Size, outputs: list[TensorSpec]) -> GflPost | None:
    three = _three(outputs)
    if len(three) != len(outputs) or len(three) < 2 or len(three) % 2:
        return None
    by_rows: dict[int, list[tuple[TensorSpec, list[int]]]] = {}
    for spec, dims in three:
        by_rows.setdefault(dims[1], []).append((spec, dims))
    stride_of = {_cells(size, s): s for s in GFL_STRIDES}
    if any(len(v) != 2 or n not in stride_of for n, v in by_rows.items()):
        return None
    scores, boxes, strides, bins = [], [], [], set()
    for n in sorted(by_rows, reverse=True):
        (a, da), (b, db) = by_rows[n]
        if da[2] > db[2]:
            (a, da), (b, db) = (b, db), (a, da)
        if db[2] % 4:
            return None
        scores.append(a.name)
        boxes.append(b.name)
        strides.append(stride_of[n])
        bins.add(db[2] // 4)
    if len(bins) != 1:
        return None
    return GflPost(score_outputs=scores, box_outputs=boxes, strides=strides, reg_max=bins.pop() - 1)


def _single(size: Size, outputs: list[TensorSpec], layout: str | None) -> Postprocess | None:
    three = _three(outputs)
    if len(outputs) != 1 or len(three) != 1:
        return None
    spec, (_, a, b) = three[0]
    grid = sum(_cells(size, s) for s in YOLO_STRIDES)
    if layout in (None, "yolox") and a == grid and b >= 6:
        return YoloXPost(output=spec.name, strides=list(YOLO_STRIDES))
    if layout in (None, "yolov5") and a == 3 * grid and b >= 6:
        return YoloV5Post(output=spec.name)
    if layout in (None, "yolov8") and b == grid and a >= 5:
        return YoloV8Post(output=spec.name, features_first=True)
    if layout == "yolov8" and a == grid and b >= 5:
        return YoloV8Post(output=spec.name, features_first=False)
    return None


def _pair(outputs: list[TensorSpec]) -> tuple[str, str, int] | None:
    """(boxes, scores, rows) of two [1, N, K] outputs; the boxes are the wider one."""
    three = _three(outputs)
    if len(outputs) != 2 or len(three) != 2 or three[0][1][1] != three[1][1][1]:
        return None
    (a, da), (b, db) = sorted(three, key=lambda t: (-t[1][2], "box" not in t[0].name.lower()))
    if da[2] < 4:
        return None
    return a.name, b.name, da[1]


def _ssd_anchors(size: Size, outputs: list[TensorSpec]) -> SsdAnchorsPost | None:
    pair = _pair(outputs)
    if pair is None:
        return None
    boxes, scores, rows = pair
    for strides, per_cell in ANCHOR_GRIDS:
        if sum(_cells(size, s) * k for s, k in zip(strides, per_cell, strict=True)) == rows:
            w, h = size
            return SsdAnchorsPost(
                boxes=boxes,
                scores=scores,
                anchors=AnchorGrid(strides=list(strides), per_cell=list(per_cell)),
                box_scale=[float(w), float(h), float(w), float(h)],
                score_activation="sigmoid",
            )
    return None


def _ssd(size: Size, outputs: list[TensorSpec]) -> SsdPost | None:
    """Decoded boxes ``[1, N, 4]`` (the one named like 'box' when both are 4 wide) + scores."""
    three = _three(outputs)
    if len(three) != 2 or three[0][1][1] != three[1][1][1]:
        return None
    ranked = sorted(three, key=lambda t: (t[1][2] != 4, "box" not in t[0].name.lower()))
    if ranked[0][1][2] != 4:
        return None
    return SsdPost(boxes=ranked[0][0].name, scores=ranked[1][0].name, box_order="yxyx")


def _mask(size: Size, outputs: list[TensorSpec], *, any_channels: bool) -> MaskPost | None:
    w, h = size
    for spec in outputs:
        dims = _static(spec)
        if dims is None or len(dims) != 4:
            continue
        if dims[2:] == [h, w] and (any_channels or dims[1] == 1):
            return MaskPost(output=spec.name, channels_last=False)
        if dims[1:3] == [h, w] and (any_channels or dims[3] == 1):
            return MaskPost(output=spec.name, channels_last=True)
    return None


Recogniser = Callable[[Size, list[TensorSpec]], Postprocess | None]
RECOGNISERS: dict[str, Recogniser] = {
    "gfl": _gfl,
    "yolox": lambda s, o: _single(s, o, "yolox"),
    "yolov5": lambda s, o: _single(s, o, "yolov5"),
    "yolov8": lambda s, o: _single(s, o, "yolov8"),
    "ssd-anchors": _ssd_anchors,
    "ssd": _ssd,
    "mask": lambda s, o: _mask(s, o, any_channels=True),
}
#: Tried in this order when nothing is named (``ssd`` is never guessed).
AUTO: tuple[Recogniser, ...] = (
    _gfl,
    lambda s, o: _single(s, o, None),
    _ssd_anchors,
    lambda s, o: _mask(s, o, any_channels=False),
)


def _with_thresholds(post: Postprocess, thresholds: Thresholds) -> Postprocess:
    import msgspec

    if isinstance(post, MaskPost):
        return post
    changes: dict[str, float] = {}
    if thresholds.score is not None:
        changes["score_threshold"] = thresholds.score
    if thresholds.iou is not None:
        changes["iou_threshold"] = thresholds.iou
    return msgspec.structs.replace(post, **changes) if changes else post


def resolve(
    task: str | None,
    layout: str | None,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    image_layout: str | None = None,
    thresholds: Thresholds = Thresholds(),  # noqa: B008 - frozen
) -> tuple[str | None, Postprocess | None, str | None]:
    """(task, postprocess, note): the named layout fitted to the shapes, or one recognised
    when no task was given; InputError when a named layout or task cannot be read."""
    size = input_size(inputs[0].shape, image_layout) if inputs else None
    if layout is not None:
        key = "gfl" if layout == "picodet" else layout
        post = RECOGNISERS[key](size, outputs) if size is not None else None
        if post is None:
            shapes = ", ".join(f"{o.name}{list(o.shape)}" for o in outputs)
            where = f"{size[0]}x{size[1]} input" if size else "an input without a fixed image size"
            raise InputError(f"--postprocess {layout}: outputs {shapes} on {where} do not fit it")
        post_task = "segmentation" if isinstance(post, MaskPost) else "detection"
        if task not in (None, post_task):
            raise InputError(f"--postprocess {layout} is for --task {post_task}, not {task}")
        return post_task, _with_thresholds(post, thresholds), None
    if task not in (None, "detection", "segmentation") or size is None:
        if task in ("detection", "segmentation"):
            raise InputError(f"--task {task} needs an image input with a fixed size")
        return task, None, None
    for recognise in AUTO:
        found = recognise(size, outputs)
        if found is None:
            continue
        found_task = "segmentation" if isinstance(found, MaskPost) else "detection"
        if task in (None, found_task):
            note = f"outputs recognised as {found_task} ({type(found).__struct_config__.tag})"
            return found_task, _with_thresholds(found, thresholds), note
    if task == "segmentation":
        found = _mask(size, outputs, any_channels=True)
        if found is not None:
            return task, found, None
    if task is not None:
        shapes = ", ".join(f"{o.name}{list(o.shape)}" for o in outputs)
        raise InputError(
            f"--task {task}: cannot recognise the output layout ({shapes}); name it with "
            f"--postprocess {{{','.join(POSTPROCESS_CHOICES)}}}"
        )
    return None, None, None


def decide_task(
    options: ConvertOptions,
    task: ConvertTask,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    notes: list[str],
) -> tuple[ConvertTask, Postprocess | None, TaskDecode | None]:
    """The task (``task``: from the flags or the source, "raw" when nothing said), its recorded
    layout and what the budget loop decodes with; a recognised layout is noted in ``notes``."""
    asked = options.task or (None if task == "raw" else task)
    image_layout = options.preprocessing.layout if options.preprocessing else None
    found, post, note = resolve(
        asked,
        options.postprocess,
        inputs,
        outputs,
        image_layout=image_layout,
        thresholds=Thresholds(score=options.score_threshold, iou=options.iou_threshold),
    )
    if note:
        notes.append(note)
    size = input_size(inputs[0].shape, image_layout) if inputs else None
    if post is None or size is None:
        return task, None, None
    chosen: ConvertTask = "segmentation" if isinstance(post, MaskPost) else "detection"
    assert found == chosen
    return chosen, post, TaskDecode(post, size)
