"""Converter benchmark: ONNX fp32 (onnxruntime, 1 thread) vs the source framework's own predict,
and a small PyTorch CNN: fp32 vs the candidate ``--quantize auto`` chose.

For each scikit-learn test model (trained on digits, converted by ``converters.api.convert``),
time one single-row prediction both ways, interleaved in the same process, and print p50s,
the speed ratio and the file sizes. "onnx alone" is the same session timed back to back (warm
caches, as ``convert`` measures it); interleaving with scikit-learn evicts the model from cache.

The CNN (3 conv + 2 FC, digits upsampled to 28×28, 3 epochs) is converted twice from the same
TorchScript file: ``--quantize none`` (the fp32 export as is) and ``--quantize auto``; both
artifacts are then timed interleaved in one process (single row, one thread), next to the
numbers the converter's own latency gate recorded in report.json.

    PYTHONPATH=. python bench/convert_bench.py [--runs 2000] [--only sklearn|cnn]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' model factories


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


def _interleaved_sessions(
    sessions: dict[str, Any], feed: dict[str, np.ndarray], *, runs: int, warmup: int
) -> dict[str, float]:
    """p50 ms per session; one call each in turn, so machine drift hits all alike."""
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(runs):
        for name, session in sessions.items():
            times[name].append(_time_ms(lambda s=session: s.run(None, feed)))
    return {name: float(np.median(values)) for name, values in times.items()}


def cnn_bench(*, runs: int, warmup: int) -> None:
    import torch

    from converters.api import convert
    from converters.options import ConvertOptions
    from converters.runtime import make_session
    from tests.converters.factories import digits_28, train_cnn, write_npz

    x, y = digits_28()
    print(f"\nPyTorch {torch.__version__} CNN on digits 28x28; fp32 vs --quantize auto")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        net = train_cnn(x[:1400], y[:1400], epochs=3)
        source = work / "cnn.pt"
        torch.jit.save(torch.jit.script(net), str(source))
        calib = write_npz(work / "calib.npz", x=x[:256], y=y[:256])
        eval_npz = write_npz(work / "eval.npz", x=x[1400:], y=y[1400:])
        common = {"task": "classification", "eval_data": eval_npz, "latency_runs": 50}
        fp32 = convert(
            source,
            work / "fp32",
            ConvertOptions(**common, quantize="none", input_shapes={"input": [1, 1, 28, 28]}),
        )
        auto = convert(
            source, work / "auto", ConvertOptions(**common, calibration=calib, quantize="auto")
        )
        report = auto.report.quantization
        assert report is not None
        print("candidates (the converter's own interleaved latency gate, report.json):")
        for c in report.candidates:
            p50 = f"{c.latency_ms_p50:.4f}" if c.latency_ms_p50 is not None else "-"
            print(
                f"  {c.name:<34} {c.status:<8} top1 {c.metric or 0:.4f}  p50 {p50:>7} ms  "
                f"{(c.size_bytes or 0) / 1024:8.1f} KiB  {c.reason[:60]}"
            )
        paths = {
            "fp32 export": work / "fp32" / fp32.manifest.model_file,
            f"chosen ({report.chosen})": work / "auto" / auto.manifest.model_file,
        }
        sessions = {name: make_session(path.read_bytes()) for name, path in paths.items()}
        p50 = _interleaved_sessions(sessions, {"input": x[1400:1401]}, runs=runs, warmup=warmup)
        base_name = "fp32 export"
        base_top1 = fp32.manifest.metrics.top1 or 0.0
        top1 = {base_name: base_top1, f"chosen ({report.chosen})": auto.manifest.metrics.top1}
        header = (
            f"{'model':<44} {'top1':>7} {'drop':>7} {'p50 ms':>8} {'speed-up':>9} "
            f"{'KiB':>8} {'size ratio':>11}"
        )
        print(header)
        print("-" * len(header))
        base_kib = paths[base_name].stat().st_size / 1024
        for name, path in paths.items():
            kib = path.stat().st_size / 1024
            acc = top1[name] or 0.0
            print(
                f"{name:<44} {acc:>7.4f} {base_top1 - acc:>+7.4f} {p50[name]:>8.4f} "
                f"{p50[base_name] / p50[name]:>8.2f}x {kib:>8.1f} {base_kib / kib:>10.2f}x"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="Timed runs per side.")
    parser.add_argument("--warmup", type=int, default=50, help="Untimed runs per side.")
    parser.add_argument("--only", choices=["sklearn", "cnn"], help="Run one of the two tables.")
    args = parser.parse_args()
    if args.only != "cnn":
        sklearn_bench(runs=args.runs, warmup=args.warmup)
    if args.only != "sklearn":
        cnn_bench(runs=args.runs, warmup=args.warmup)
    return 0


def sklearn_bench(*, runs: int, warmup: int) -> None:

    import sklearn
    from sklearn.datasets import load_digits

    from converters.api import convert
    from converters.options import ConvertOptions
    from converters.runtime import make_session

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    row = x[1400:1401]
    print(f"sklearn {sklearn.__version__}; single row of digits (1x64), {runs} interleaved runs")
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
                session, model, row, runs=runs, warmup=warmup
            )
            pkl_kib, onnx_kib = source.stat().st_size / 1024, onnx_path.stat().st_size / 1024
            print(
                f"{name:<10} {src_p50:>14.4f} {onnx_p50:>12.4f} {src_p50 / onnx_p50:>8.1f}x "
                f"{alone_p50:>11.4f} "
                f"{pkl_kib:>11.1f} {onnx_kib:>9.1f} {onnx_kib / pkl_kib:>10.2f}x"
            )


if __name__ == "__main__":
    raise SystemExit(main())
