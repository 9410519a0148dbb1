"""onnxruntime sessions pinned to one thread, running and timing them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from converters.errors import ConvertError, one_line

#: Rows per run when the batch is dynamic: bounds activation memory on large eval sets.
CHUNK_ROWS = 256


@dataclass(frozen=True)
class Latency:
    """Single-row latency of one session, in milliseconds."""

    p50_ms: float
    p95_ms: float
    runs: int
    threads: int


def make_session(
    model_bytes: bytes,
    *,
    optimize: bool = True,
    threads: int = 1,
    error: type[ConvertError] = ConvertError,
    what: str = "the converted model",
) -> Any:
    """A CPU InferenceSession with ``threads`` intra-op threads and sequential execution."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own untyped pybind errors
        raise error(f"onnxruntime cannot load {what}: {one_line(err)}") from err


def run(
    session: Any, feeds: Mapping[str, Any], *, what: str = "the converted model"
) -> dict[str, Any]:
    """Run ``session`` on named inputs; outputs by name, as numpy arrays."""
    import numpy as np

    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, dict(feeds))
    except Exception as err:  # onnxruntime raises its own untyped pybind errors
        raise ConvertError(f"onnxruntime failed running {what}: {one_line(err)}") from err
    return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}


def measure_latency(
    session: Any, feeds: Mapping[str, Any], *, warmup: int, runs: int, threads: int = 1
) -> Latency:
    """Warm up (first runs allocate buffers and pick kernels), then time ``runs`` calls."""
    import numpy as np

    feed = dict(feeds)
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times[i] = (time.perf_counter_ns() - start) / 1e6
    return Latency(
        p50_ms=float(np.median(times)),
        p95_ms=float(np.percentile(times, 95)),
        runs=runs,
        threads=threads,
    )


def run_batched(
    session: Any, feeds: Mapping[str, Any], *, batch: int | None, what: str = "the converted model"
) -> dict[str, Any]:
    """Run all rows in chunks: of the fixed batch, or of :data:`CHUNK_ROWS` when it is dynamic."""
    import numpy as np

    rows = len(next(iter(feeds.values())))
    if batch is None:
        if rows <= CHUNK_ROWS:
            return run(session, feeds, what=what)
        batch = CHUNK_ROWS
    elif rows % batch:
        raise ConvertError(f"{rows} rows do not split into {what}'s fixed batch of {batch}")
    parts = [
        run(session, {k: v[i : i + batch] for k, v in feeds.items()}, what=what)
        for i in range(0, rows, batch)
    ]
    return {name: np.concatenate([np.atleast_1d(p[name]) for p in parts]) for name in parts[0]}
