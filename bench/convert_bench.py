"""Converter benchmark: ONNX fp32 (onnxruntime, 1 thread) vs the source framework's own predict.

For each test model (trained on scikit-learn digits, converted by ``converters.api.convert``),
time one single-row prediction both ways, interleaved in the same process, and print p50s,
the speed ratio and the file sizes. "onnx alone" is the same session timed back to back (warm
caches, as ``convert`` measures it); interleaving with scikit-learn evicts the model from cache.

    PYTHONPATH=. python bench/convert_bench.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np


def _models() -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logreg": LogisticRegression(max_iter=2000),
        "forest": RandomForestClassifier(n_estimators=40, random_state=0),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    }


def _time_ms(fn: Any) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def _interleaved(
    session: Any, model: Any, row: np.ndarray, *, runs: int, warmup: int
) -> tuple[float, float, float]:
    """p50 ms of sklearn predict_proba and ORT, interleaved; then ORT back to back."""
    feed = {"input": row}
    for _ in range(warmup):
        session.run(None, feed)
        model.predict_proba(row)
    onnx_ms = np.empty(runs)
    source_ms = np.empty(runs)
    for i in range(runs):
        onnx_ms[i] = _time_ms(lambda: session.run(None, feed))
        source_ms[i] = _time_ms(lambda: model.predict_proba(row))
    alone_ms = np.array([_time_ms(lambda: session.run(None, feed)) for _ in range(runs)])
    return float(np.median(source_ms)), float(np.median(onnx_ms)), float(np.median(alone_ms))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="Timed runs per side.")
    parser.add_argument("--warmup", type=int, default=50, help="Untimed runs per side.")
    args = parser.parse_args()

    import sklearn
    from sklearn.datasets import load_digits

    from converters.api import convert
    from converters.options import ConvertOptions
    from converters.runtime import make_session

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    row = x[1400:1401]
    print(
        f"sklearn {sklearn.__version__}; single row of digits (1x64), {args.runs} interleaved runs"
    )
    header = (
        f"{'model':<10} {'source p50 ms':>14} {'onnx p50 ms':>12} {'speed-up':>9} "
        f"{'onnx alone':>11} "
        f"{'pickle KiB':>11} {'onnx KiB':>9} {'size ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, model in _models().items():
            model.fit(x[:1400], y[:1400])
            source = work / f"{name}.joblib"
            joblib.dump(model, source)
            result = convert(source, work / name, ConvertOptions(latency_warmup=5, latency_runs=20))
            onnx_path = work / name / result.manifest.model_file
            session = make_session(onnx_path.read_bytes())
            src_p50, onnx_p50, alone_p50 = _interleaved(
                session, model, row, runs=args.runs, warmup=args.warmup
            )
            pkl_kib, onnx_kib = source.stat().st_size / 1024, onnx_path.stat().st_size / 1024
            print(
                f"{name:<10} {src_p50:>14.4f} {onnx_p50:>12.4f} {src_p50 / onnx_p50:>8.1f}x "
                f"{alone_p50:>11.4f} "
                f"{pkl_kib:>11.1f} {onnx_kib:>9.1f} {onnx_kib / pkl_kib:>10.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
