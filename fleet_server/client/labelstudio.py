"""Reading Label Studio's JSON export into sample labels (``edgefleet fleet samples import``).

The export is a JSON list of tasks; each task has ``data`` (ours carries
``data.edgefleet_sample``, the sample id, as exported by ``samples export --format
labelstudio``; failing that the id is read from ``data.image``'s file name ``<id>.<ext>``) and
``annotations``, each with a ``result`` list. The newest annotation that is not
``was_cancelled`` counts. A ``choices`` result gives a class label; ``rectanglelabels`` results
give boxes, whose ``value`` x, y, width, height are percentages of ``original_width`` /
``original_height`` and are turned into pixels. Tasks without an annotation are skipped (and
counted); anything else malformed is an error naming the task.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A Label Studio export larger than this is refused (100k tasks are ~60 MB).
MAX_EXPORT_BYTES = 256 * 1024 * 1024
_ID_IN_PATH = re.compile(r"(?:^|/)(\d+)\.[A-Za-z0-9]+$")


class LabelStudioError(ValueError):
    """The file is not a Label Studio JSON export we can read; the message names the task."""


@dataclass
class Imported:
    labels: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def read_export(path: Path) -> list[Any]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_EXPORT_BYTES + 1)
    except OSError as err:
        raise LabelStudioError(f"cannot read {path}: {err.strerror or err}") from err
    if len(raw) > MAX_EXPORT_BYTES:
        raise LabelStudioError(f"{path} is larger than {MAX_EXPORT_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise LabelStudioError(f"{path} is not JSON: {err}") from err
    if not isinstance(data, list):
        raise LabelStudioError(f"{path}: a Label Studio JSON export is a list of tasks")
    return data


def labels_from_export(tasks: list[Any]) -> Imported:
    out = Imported()
    for position, task in enumerate(tasks):
        where = f"task #{position}"
        if not isinstance(task, dict):
            raise LabelStudioError(f"{where} is not an object")
        where = f"task {task.get('id', position)}"
        annotation = _latest(task.get("annotations") or [], where)
        if annotation is None:
            out.skipped += 1
            continue
        label = _label(annotation.get("result") or [], where)
        if label is None:
            out.skipped += 1
            continue
        out.labels.append({"id": _sample_id(task, where), **label})
    return out


def _latest(annotations: Any, where: str) -> dict[str, Any] | None:
    if not isinstance(annotations, list):
        raise LabelStudioError(f"{where}: annotations is not a list")
    valid = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled", False)]
    if not valid:
        return None
    # Newest last by updated_at/created_at when given (ISO strings sort), else file order.
    return max(
        enumerate(valid),
        key=lambda item: (
            str(item[1].get("updated_at") or item[1].get("created_at") or ""),
            item[0],
        ),
    )[1]


def _sample_id(task: dict[str, Any], where: str) -> int:
    data = task.get("data")
    if not isinstance(data, dict):
        raise LabelStudioError(f"{where}: no data object")
    value = data.get("edgefleet_sample")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    image = data.get("image")
    if isinstance(image, str):
        match = _ID_IN_PATH.search(image)
        if match:
            return int(match.group(1))
    raise LabelStudioError(
        f"{where}: cannot tell which sample it is (no data.edgefleet_sample, and data.image is "
        "not <sample id>.<ext>)"
    )


def _label(results: Any, where: str) -> dict[str, Any] | None:
    if not isinstance(results, list):
        raise LabelStudioError(f"{where}: result is not a list")
    choices: list[str] = []
    boxes: list[dict[str, Any]] = []
    has_rectangles = False
    for result in results:
        if not isinstance(result, dict):
            raise LabelStudioError(f"{where}: a result is not an object")
        kind = result.get("type")
        value = result.get("value")
        if not isinstance(value, dict):
            raise LabelStudioError(f"{where}: a {kind} result has no value object")
        if kind == "choices":
            picked = value.get("choices")
            if not isinstance(picked, list) or len(picked) != 1 or not isinstance(picked[0], str):
                raise LabelStudioError(f"{where}: a choices result must pick exactly one class")
            choices.append(picked[0])
        elif kind == "rectanglelabels":
            has_rectangles = True
            boxes.append(_box(result, value, where))
        # Other result types (text areas, ratings...) carry no label we store.
    if choices and has_rectangles:
        raise LabelStudioError(f"{where}: both a class choice and boxes; a sample has one or other")
    if len(set(choices)) > 1:
        raise LabelStudioError(f"{where}: more than one class chosen: {sorted(set(choices))}")
    if choices:
        return {"label": choices[0]}
    if has_rectangles:
        return {"boxes": boxes}
    return None


def _box(result: dict[str, Any], value: dict[str, Any], where: str) -> dict[str, Any]:
    names = value.get("rectanglelabels")
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        raise LabelStudioError(f"{where}: a rectangle must carry exactly one label")
    if value.get("rotation") not in (None, 0, 0.0):
        raise LabelStudioError(f"{where}: rotated rectangles are not supported")
    width, height = result.get("original_width"), result.get("original_height")
    numbers = [value.get(k) for k in ("x", "y", "width", "height")]
    if not all(_number(n) for n in [width, height, *numbers]):
        raise LabelStudioError(
            f"{where}: a rectangle needs numeric x, y, width, height and original_width/height"
        )
    x, y, w, h = (float(n) for n in numbers)  # type: ignore[arg-type]
    fx, fy = float(width) / 100.0, float(height) / 100.0  # type: ignore[arg-type]
    return {
        "label": names[0],
        "x1": round(x * fx, 3),
        "y1": round(y * fy, 3),
        "x2": round((x + w) * fx, 3),
        "y2": round((y + h) * fy, 3),
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
