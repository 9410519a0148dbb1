"""``edgefleet agent bench``: the agent engine against the bare runtime, same process.

Both run the same model file, input and thread count, interleaved call by call (the order
alternates each round), so drift in CPU clock or load hits both alike. The agent side is
:meth:`LoadedModel.infer` (input checks + backend call); the bare side is the runtime's own
call (``InferenceSession.run`` or ``set_tensor`` / ``invoke`` / ``get_tensor``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.engine import BackendOptions, LoadedModel, load_model
from agent.engine.bare import load_bare
from agent.engine.model import numpy_dtype, static_shape
from agent.memory import rss_mb


@dataclass(frozen=True)
class BenchTarget:
    """What is measured: the model file, its format and its tensors."""

    model: LoadedModel
    path: Path
    fmt: str


def open_target(path: Path, options: BackendOptions) -> BenchTarget:
    """An artifact directory (verified, self-tested) or a bare ``.onnx`` / ``.tflite`` file."""
    if path.is_dir():
        model = load_model(path, options=options)
        return BenchTarget(model, path / model.manifest.model_file, model.manifest.format)
    model = load_bare(path, options)
    return BenchTarget(model, path, model.manifest.format)


def bare_runner(target: BenchTarget, options: BackendOptions) -> Any:
    """The runtime's own call on its own session, built with the same options."""
    if target.fmt == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(target.path), so, providers=["CPUExecutionProvider"])

        def run_onnx(feeds: dict[str, np.ndarray]) -> Any:
            return sess.run(None, feeds)

        return run_onnx
    from agent.engine.litert import _interpreter_class

    interp = _interpreter_class()(model_path=str(target.path), num_threads=options.threads)
    interp.allocate_tensors()
    ins = [(d["name"], d["index"]) for d in interp.get_input_details()]
    outs = [d["index"] for d in interp.get_output_details()]

    def run_litert(feeds: dict[str, np.ndarray]) -> Any:
        for name, index in ins:
            interp.set_tensor(index, feeds[name])
        interp.invoke()
        return [interp.get_tensor(i) for i in outs]

    return run_litert


def random_feeds(model: LoadedModel, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in model.manifest.inputs:
        dtype, shape = numpy_dtype(spec), static_shape(spec)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            feeds[spec.name] = rng.integers(max(info.min, -128), min(info.max, 127), shape, dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) > 0.5
        else:
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(dtype)
    return feeds


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {f"p{q}": round(float(np.percentile(a, q)), 6) for q in (50, 95, 99)}


def run_bench(
    path: Path, *, threads: int = 1, runs: int = 2000, warmup: int = 50
) -> dict[str, Any]:
    """Measure agent vs bare; returns the ``--json`` object."""
    options = BackendOptions(threads=threads)
    target = open_target(path, options)
    bare = bare_runner(target, options)
    agent = target.model.infer
    feeds = random_feeds(target.model)
    for _ in range(warmup):
        agent(feeds)
        bare(feeds)
    agent_ms: list[float] = []
    bare_ms: list[float] = []
    clock = time.perf_counter
    for i in range(runs):
        if i % 2:
            t0 = clock()
            agent(feeds)
            t1 = clock()
            bare(feeds)
            t2 = clock()
            agent_ms.append((t1 - t0) * 1e3)
            bare_ms.append((t2 - t1) * 1e3)
        else:
            t0 = clock()
            bare(feeds)
            t1 = clock()
            agent(feeds)
            t2 = clock()
            bare_ms.append((t1 - t0) * 1e3)
            agent_ms.append((t2 - t1) * 1e3)
    a, b = percentiles(agent_ms), percentiles(bare_ms)
    return {
        "backend": target.fmt,
        "model": str(path),
        "threads": threads,
        "runs": runs,
        "agent_ms": a,
        "bare_ms": b,
        "overhead_ratio": round(a["p50"] / b["p50"], 4) if b["p50"] > 0 else None,
        "rss_mb": rss_mb(),
    }
