"""Scoring a candidate against fp32: the budget metric and the fidelity numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from converters.quantize.task_metrics import TaskDecode, task_score
from converters.validators import predicted_classes


def _first_float(outputs: Mapping[str, Any]) -> str | None:
    scores = [k for k, v in outputs.items() if v.dtype.kind == "f" and v.ndim == 2]
    floats = [k for k, v in outputs.items() if v.dtype.kind == "f"]
    names = scores or floats
    return names[0] if names else None


def metric_name(
    labels: Any | None,
    outputs: Mapping[str, Any],
    task: str,
    decode: TaskDecode | None = None,
) -> str:
    """top1 with labels; box_f1 / mask_iou for a detector / segmenter whose layout is known;
    argmax_agreement for scores; else cosine (all but top1 vs fp32)."""
    if decode is not None:
        return decode.metric
    if labels is not None and task == "classification":
        if predicted_classes(dict(outputs), None) is not None:
            return "top1"
    name = _first_float(outputs)
    if name is not None and outputs[name].ndim == 2 and outputs[name].shape[1] > 1:
        return "argmax_agreement"
    return "cosine"


def fidelity(got: Mapping[str, Any], fp32: Mapping[str, Any]) -> dict[str, float]:
    """max/mean abs error and cosine of the first float output; argmax agreement for scores."""
    import numpy as np

    name = _first_float(fp32)
    if name is None or name not in got:
        return {}
    a = np.asarray(got[name], dtype=np.float64).reshape(len(got[name]), -1)
    b = np.asarray(fp32[name], dtype=np.float64).reshape(a.shape)
    err = np.abs(a - b)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    values = {
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "cosine": float(np.sum(a * b) / denom) if denom > 0 else 1.0,
    }
    if a.shape[1] > 1:
        values["argmax_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
    return values


def score(
    name: str,
    got: Mapping[str, Any],
    fp32: Mapping[str, Any],
    *,
    labels: Any | None,
    class_values: Any | None,
    decode: TaskDecode | None = None,
) -> float:
    """The metric ``name`` of outputs ``got`` (fp32's own outputs score 1.0 on agreement/cosine)."""
    import numpy as np

    if name == "top1":
        predicted = predicted_classes(dict(got), class_values)
        if predicted is None:
            return 0.0
        want = np.asarray(labels)
        return float(np.mean(np.asarray(predicted).astype(str) == want.astype(str)))
    if name in ("box_f1", "mask_iou") and decode is not None:
        return task_score(decode, got, fp32)
    values = fidelity(got, fp32)
    key = "argmax_agreement" if name == "argmax_agreement" else "cosine"
    return values.get(key, 0.0)
