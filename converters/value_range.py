"""Calibration data in the wrong value range: raw 0..255 pixels fed to a model that expects
normalised input calibrate every activation range wrong, and the int8 model is then rejected (or
worse, accepted on equally wrong eval data). A warning with the numbers, not an error: some
models do take raw pixels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Share of whole-number values above which float data is taken for raw pixels.
WHOLE_SHARE = 0.99


def _range(x: Any) -> tuple[float, float, float] | None:
    import numpy as np

    values = np.asarray(x)
    if values.size == 0 or values.dtype.kind != "f":
        return None
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    whole = float(np.mean(finite == np.round(finite)))
    return float(finite.min()), float(finite.max()), whole


def raw_pixel_warnings(
    calibration: Mapping[str, Any], *, evaluation: Mapping[str, Any] | None = None
) -> list[str]:
    """One line per float input whose calibration rows look like raw 0..255 pixels (whole
    numbers up to 255, max above 2), or whose range is far from the eval data's."""
    lines: list[str] = []
    for name, rows in calibration.items():
        found = _range(rows)
        if found is None:
            continue
        low, high, whole = found
        if low >= 0 and 2.0 < high <= 255.0 and whole >= WHOLE_SHARE:
            lines.append(
                f"calibration input {name!r}: values {low:g}..{high:g}, {whole:.0%} whole "
                "numbers: this looks like raw 0..255 pixels; if the model expects normalised "
                "input (0..1, or mean/std), normalise the data (or give an image folder and "
                "--preprocessing)"
            )
            continue
        other = _range(evaluation[name]) if evaluation and name in evaluation else None
        if other is not None:
            span, eval_span = high - low, other[1] - other[0]
            if span > 0 and eval_span > 0 and max(span / eval_span, eval_span / span) > 10:
                lines.append(
                    f"calibration input {name!r}: values {low:g}..{high:g}, but the eval data "
                    f"is {other[0]:g}..{other[1]:g}: the two are not preprocessed alike"
                )
    return lines
