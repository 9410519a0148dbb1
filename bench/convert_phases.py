"""Where ``edgefleet convert --quantize auto`` spends its time, per corpus model and phase.

Each model ≤ ``--max-mb`` is converted with default settings (only the data given) while the
converter's progress lines are captured with a timestamp each; a line's phase lasts until the
next line. Phases: load + fidelity validation, normalise, each candidate (calibrate + quantize +
validate, budget-loop steps with --verbose), the latency gate, and the rest (latency, stats,
self-test, writing) from ``report.json``'s timings. One row per candidate follows (status,
seconds, drop, speed-up, reason).

    PYTHONPATH=. python bench/convert_phases.py [--only NAME ...] [--rows 64] [--max-mb 10]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Progress line prefix → phase.
PHASES = (
    ("normalising", "normalise"),
    ("probe", "probe builds"),
    ("latency probe", "probe timing"),
    ("calibrating and quantizing", "candidates"),
    ("candidate ", "candidates"),
    ("budget loop", "budget loop"),
    ("latency gate", "gate"),
    ("benchmark round", "gate"),
    ("confirm", "gate"),
)
LINE = re.compile(r"edgefleet convert: \[\s*\d+ s\] (?P<text>.*)")


class _Clock(io.TextIOBase):
    """A stderr stand-in that keeps (time, line) for every progress line."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        now = time.perf_counter()
        for raw in text.splitlines():
            match = LINE.match(raw)
            if match:
                self.lines.append((now, match.group("text").strip()))
        return len(text)


@contextlib.contextmanager
def _captured() -> Iterator[_Clock]:
    clock = _Clock()
    saved = sys.stderr
    sys.stderr = clock  # type: ignore[assignment]
    try:
        yield clock
    finally:
        sys.stderr = saved


def _phase(text: str) -> str:
    for prefix, phase in PHASES:
        if text.lstrip().startswith(prefix):
            return phase
    return "other"


def phases(lines: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds per phase: each line's phase runs until the next line (the last until ``end``)."""
    out: dict[str, float] = {}
    for (at, text), (nxt, _) in zip(lines, [*lines[1:], (end, "")], strict=True):
        name = _phase(text)
        out[name] = out.get(name, 0.0) + nxt - at
    return out


def run_one(model: Any, work: Path, *, rows: int) -> dict[str, Any]:
    from converters.api import convert
    from converters.corpus import model_path
    from converters.corpus.data import write_data
    from converters.options import ConvertOptions

    calib, evals = write_data(model, work, rows=rows)
    options = ConvertOptions(
        calibration=calib, eval_data=evals, quantize="auto", progress=True, verbose=True
    )
    load = os.getloadavg()[0]
    started = time.perf_counter()
    cpu = time.process_time()
    with _captured() as clock:
        result = convert(model_path(model), work / "artifact", options)
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu
    timings = dict(result.report.timings_s)
    q = result.report.quantization
    row: dict[str, Any] = {
        "model": model.name,
        "size_mb": round(model.size / 1e6, 2),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "total_s": round(total, 1),
        # CPU seconds of this process: far less sensitive than wall time to a loaded host.
        "cpu_s": round(cpu, 1),
        "timings": {k: round(float(v), 1) for k, v in timings.items()},
        "lines": [(round(t - started, 1), text) for t, text in clock.lines],
    }
    if clock.lines:
        quant_end = clock.lines[0][0] + float(timings.get("quantize_s", 0.0))
        row["phases"] = {
            k: round(v, 1)
            for k, v in phases(clock.lines, max(quant_end, clock.lines[-1][0])).items()
        }
    if q is not None:
        row["chosen"] = q.chosen
        row["metric"] = q.metric
        row["candidates"] = [
            {
                "name": c.name,
                "status": c.status,
                "seconds": round(c.seconds, 1),
                "drop": c.drop,
                "speedup": c.speedup,
                "probe_speedup": c.probe_speedup,
                "eval_rows": c.eval_rows,
                "steps": [
                    (s.excluded_tensor, round(s.tensor_error, 3), s.drop, s.eval_rows)
                    for s in c.budget_steps
                ],
                "reason": c.reason[:400],
            }
            for c in q.candidates
        ]
        chosen = next(c for c in q.candidates if c.name == q.chosen)
        row["speedup"] = chosen.speedup
        row["value"] = chosen.metric
        row["baseline"] = q.baseline_metric
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="Corpus model names.")
    parser.add_argument("--rows", type=int, default=64, help="Calibration rows (eval: half).")
    parser.add_argument("--max-mb", type=float, default=10.0, help="Largest model file, MB.")
    parser.add_argument("--json", type=Path, default=None, help="Write the rows here too.")
    args = parser.parse_args()

    from converters.corpus import CORPUS
    from converters.corpus.fetch import is_cached
    from converters.errors import ConvertError

    out: list[dict[str, Any]] = []
    for model in CORPUS:
        if args.only and model.name not in args.only:
            continue
        if model.size > args.max_mb * 1e6 or not is_cached(model):
            continue
        with tempfile.TemporaryDirectory(prefix="convert-phases-") as tmp:
            try:
                row = run_one(model, Path(tmp), rows=args.rows)
            except ConvertError as err:
                row = {"model": model.name, "error": str(err)}
        out.append(row)
        print(json.dumps(row), flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
