"""Serving latency with a shadow model beside it (issue #14): does the shadow delay serving?

Target: serving p95 +≤ 5 % at sample rate 0.1. For each model (digits, a logistic regression of
tens of µs; a conv classifier of ~1 ms) three real :class:`agent.pipeline.Pipeline` s serve the
same inputs, each with a :class:`agent.shadow.ShadowRunner` whose worker thread runs:

* ``none``: no shadow loaded (the per-input cost is one ``wants()`` call);
* ``0.1``: a second copy of the model as the shadow, sample rate 0.1, CPU budget 0.25;
* ``1.0``: the same at sample rate 1.0, CPU budget 1.0 (the heaviest setting).

Per input the wall time of ``Pipeline.process`` (infer + postprocess + the shadow hand-over) is
recorded. The three run interleaved in blocks of 100 inputs, rounds repeated, so the drift of
a shared host hits all alike; p50/p95 over all inputs of a configuration, the ratio to
``none`` beside it. Engines run with one thread each (serving and shadow), as on a device
whose cores are not all given to the runtime.

Lanes: ``none``, ``0.1`` (the worker at nice 19, as the agent runs it), ``0.1-nice0`` (the
worker at the serving thread's priority, as before), ``1.0`` (nice 19). Three runs of
``--n 8000 --repeat 3`` at load average 4–5 (three other jobs running), p95 ratio to ``none``
in the same run (each a median of three repeats):

* conv 96×96 (p50 ~0.3 ms): rate 0.1 **×1.011, ×0.996, ×1.014** at nice 19 against ×1.133,
  ×1.075, ×1.133 at nice 0; rate 1.0 ×1.068, ×1.022, ×1.083. p50 ×0.999–1.018.
* digits (p50 ~0.03 ms): rate 0.1 ×0.941, ×1.063, ×1.025 (nice 0: ×0.981, ×1.04, ×1.006 — the
  shadow's work on digits is Python under the GIL, which a nice value does not order); rate
  1.0 ×0.993, ×1.059, ×1.027.
* After the worker's per-input GIL work was cut (serving top-1 handed over, shadow top-1 from
  its score row, one lock per poll, ``Pair`` a named tuple, fewer ``thread_time`` syscalls),
  digits at rate 0.1, the old and the new runner as two lanes of one process beside ``none``
  (interleaved blocks, 6 runs of 8000 inputs, load 28–30 on the 2 cores): p95 ×1.066/×1.058,
  ×1.012/×0.974, ×1.045/×1.009, ×1.026/×1.012, ×0.958/×0.931, ×1.246/×0.94 (old/new) —
  the new one lower in 6 of 6, median ×0.99 against ×1.036; p50 ×1.02 either way. At that
  load a repeat of the same lane moves by ±10 %. Five more such runs at load 33–40 (the
  rollout tests running beside): ×1.264/×1.097, ×1.104/×1.077, ×1.058/×1.098, ×1.033/×1.153,
  ×1.03/×1.072; six more at load 27–31: ×1.081/×1.057, ×1.085/×1.013, ×1.185/×1.084,
  ×0.993/×0.907, ×1.166/×1.164, ×0.991/×0.951 (median ×1.083 old, ×1.035 new). New lower in
  14 of 17 runs (sign test p ≈ 0.006); at that load the ≤ 5 % target is met in the median of
  runs, not run by run (this bench alone, load 23–30: ×0.934, ×1.274, ×0.966).
  What does hold at any load is the worker's thread CPU time per paired input (``--cpu``, 300
  inputs × 15 rounds, median): 32.2 µs before, 24.5 µs after, of which the shadow model's run
  is 7.6 µs — the Python beside it 24.6 → 16.9 µs (−31 %), the same figures reported.
* At load 14–20 (before): conv p95 is 17–31 ms against a 0.3 ms p50 — the host's scheduler, not
  the model — and the ratios say nothing (×0.97–1.07 either way).
* Before the worker polled (woken per paired input), digits p95 was ×1.49–1.79 at rate 0.1,
  and ×1.7–1.9 with a worker that did nothing: the wake-ups, not the shadow's work.

    PYTHONPATH=. python bench/shadow_bench.py [--n 6000] [--repeat 3] [--cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' model factories

#: (lane, sample rate, CPU budget, the worker's nice value): "0.1-nice0" is the worker at
#: the serving thread's priority, as before the agent lowered it.
CONFIGS: tuple[tuple[str, float | None, float, int], ...] = (
    ("none", None, 0.25, 19),
    ("0.1", 0.1, 0.25, 19),
    ("0.1-nice0", 0.1, 0.25, 0),
    ("1.0", 1.0, 1.0, 19),
)
BLOCK = 100


def _frames(kind: str, n: int, size: int) -> list[np.ndarray]:
    if kind == "digits":
        from tests.agent.capture.helpers import digit_pixels

        return [digit_pixels(1400 + i % 300) for i in range(n)]
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(64)]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(artifact: Path, kind: str, *, n: int, size: int) -> list[dict[str, Any]]:
    from agent.engine import BackendOptions, load_model
    from agent.inputs import InputItem
    from agent.pipeline import Pipeline, prepare
    from agent.shadow import ShadowRunner
    from agent.state import ModelSlot, Serving
    from agent.telemetry import TelemetryCollector

    def serving() -> Serving:
        return Serving.of(load_model(artifact, options=BackendOptions(threads=1)))

    frames = _frames(kind, n, size)
    stop = threading.Event()
    lanes: list[tuple[str, Any, Any, list[Any], list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, rate, budget, nice in CONFIGS:
            slot = ModelSlot()
            slot.swap(serving())
            runner = ShadowRunner(nice=nice)
            if rate is not None:
                runner.load(serving(), sample_rate=rate, cpu_budget=budget)
            pipeline = Pipeline(
                slot=slot,
                collector=TelemetryCollector(device_id="bench", data_dir=Path(tmp)),
                on_error=lambda kind, detail: None,
                shadow=runner,
            )
            worker = threading.Thread(target=runner.run, args=(stop,), daemon=True)
            worker.start()
            current = slot.current
            assert current is not None
            jobs = [prepare(InputItem(source="b", data=f), current) for f in frames]
            for job in jobs[:50]:  # warm-up
                pipeline.process(job)
            runner.flush()
            lanes.append((name, pipeline, runner, jobs, []))
        for start in range(0, n, BLOCK):  # interleaved blocks
            for _name, pipeline, _runner, jobs, times in lanes:
                for i in range(start, min(start + BLOCK, n)):
                    job = jobs[i % len(jobs)]
                    t0 = time.perf_counter()
                    pipeline.process(job)
                    times.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.2)  # let the workers finish what they hold before the reports
        stop.set()
    rows = []
    base_p50 = base_p95 = 0.0
    for name, _pipeline, runner, _jobs, times in lanes:
        report = runner.flush()
        p50, p95 = statistics.median(times), _percentile(times, 95)
        if name == "none":
            base_p50, base_p95 = p50, p95
        rows.append(
            {
                "model": kind,
                "shadow_rate": name,
                "inputs": len(times),
                "serving_p50_ms": round(p50, 4),
                "serving_p95_ms": round(p95, 4),
                "p50_ratio": round(p50 / base_p50, 3),
                "p95_ratio": round(p95 / base_p95, 3),
                "paired": report.paired if report else 0,
                "skipped": report.skipped if report else 0,
                "shadow_p95_ms": report.shadow_p95_ms if report else None,
            }
        )
    return rows


def worker_cpu(artifact: Path, *, rounds: int = 15) -> dict[str, Any]:
    """The shadow worker's thread CPU time per paired input (digits), and the shadow model's
    run alone: what the worker does under the GIL beside the run is the difference. CPU time,
    not wall time, so that a busy host's preemptions do not count (``--cpu``)."""
    from agent.engine import BackendOptions, load_model
    from agent.inputs import InputItem
    from agent.pipeline import prepare
    from agent.shadow import Pair, ShadowRunner
    from agent.state import Serving
    from tests.agent.capture.helpers import digit_pixels

    serving = Serving.of(load_model(artifact, options=BackendOptions(threads=1)))
    shadow = Serving.of(load_model(artifact, options=BackendOptions(threads=1)))
    name = serving.preprocess.tensor.name
    pairs = []
    for i in range(300):
        job = prepare(InputItem(source="b", data=digit_pixels(1400 + i)), serving)
        outputs = serving.model.infer({name: job.tensor})
        result = serving.results(outputs, [job.geometry])[0]
        scores = serving.model.probabilities(outputs)
        assert scores is not None
        top = int(scores[0].argmax())
        top1 = (top, float(scores[0, top]))
        pairs.append(
            Pair(job.item, serving, job.tensor, job.geometry, outputs, result, 0.03, 0.03, top1)
        )
    runner = ShadowRunner()
    runner.load(shadow, sample_rate=1.0, cpu_budget=1.0)
    per_pair, infer = [], []
    for _ in range(rounds):
        start = time.thread_time()
        for pair in pairs:
            runner.run_pairs([pair])
        per_pair.append((time.thread_time() - start) / len(pairs) * 1e6)
        start = time.thread_time()
        for pair in pairs:
            shadow.model.infer({name: pair.tensor})
        infer.append((time.thread_time() - start) / len(pairs) * 1e6)
    report = runner.flush()
    return {
        "worker_cpu_us_per_pair": round(statistics.median(per_pair), 1),
        "shadow_infer_cpu_us": round(statistics.median(infer), 1),
        "paired": report.paired if report else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--conv-size", type=int, default=96)
    parser.add_argument("--models", default="digits,conv", help="comma-separated")
    parser.add_argument(
        "--cpu", action="store_true", help="only the worker's CPU time per paired input (digits)"
    )
    args = parser.parse_args()
    models = set(args.models.split(","))
    from tests.agent.factory import conv_artifact
    from tests.utils.artifacts import build_digits_artifact

    if args.cpu:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(worker_cpu(build_digits_artifact(Path(tmp) / "d"))))  # noqa: T201
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        digits = build_digits_artifact(root / "d")
        conv = conv_artifact(root / "c", size=args.conv_size, channels=16)
        for _ in range(args.repeat):
            if "digits" in models:
                rows += measure(digits, "digits", n=args.n, size=8)
            if "conv" in models:
                rows += measure(conv, "conv", n=max(args.n // 4, 500), size=args.conv_size)
    for row in rows:
        print(json.dumps(row))  # noqa: T201 (a bench prints its figures)
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault((row["model"], row["shadow_rate"]), []).append(row)
    for (model, rate), group in by.items():
        summary = {
            "summary": f"{model} shadow={rate}",
            "median_p50_ratio": statistics.median(r["p50_ratio"] for r in group),
            "median_p95_ratio": statistics.median(r["p95_ratio"] for r in group),
            "median_serving_p95_ms": statistics.median(r["serving_p95_ms"] for r in group),
        }
        print(json.dumps(summary))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
