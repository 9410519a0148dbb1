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


#: The manifest's latency figure stops after this many seconds of timed calls (at least
#: :data:`MIN_LATENCY_RUNS`): 200 calls of a 60 ms classifier took 13 s under load, for a
#: median that 40 calls already pin down; ``Latency.runs`` records how many were timed.
LATENCY_BUDGET_S = 4.0
MIN_LATENCY_RUNS = 20


def measure_latency(
    session: Any,
    feeds: Mapping[str, Any],
    *,
    warmup: int,
    runs: int,
    threads: int = 1,
    budget_s: float | None = LATENCY_BUDGET_S,
) -> Latency:
    """Warm up (first runs allocate buffers and pick kernels), then time ``runs`` calls, or
    fewer (never below :data:`MIN_LATENCY_RUNS`) once ``budget_s`` seconds have been timed;
    the warm-up stops early on the same budget (at least 2 calls)."""
    import numpy as np

    feed = dict(feeds)
    began = time.perf_counter()
    for done in range(warmup):
        session.run(None, feed)
        if budget_s is not None and done >= 1 and time.perf_counter() - began > budget_s / 4:
            break
    times: list[float] = []
    spent = 0.0
    for _ in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feed)
        took = (time.perf_counter_ns() - start) / 1e6
        times.append(took)
        spent += took / 1000
        if budget_s is not None and spent > budget_s and len(times) >= MIN_LATENCY_RUNS:
            break
    values = np.asarray(times, dtype=np.float64)
    return Latency(
        p50_ms=float(np.median(values)),
        p95_ms=float(np.percentile(values, 95)),
        runs=len(times),
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
