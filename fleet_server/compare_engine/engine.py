"""Run two versions of a model on the same inputs and say how they differ.

Both are loaded with the agent's engine (the code a device runs: verify, warm up, self-test)
with one inference thread. Each row runs on both versions back to back, the order alternating
row by row, so a slow spell on a busy machine falls on both and the median latencies stay
comparable; the host and architecture are recorded with them.
"""

from __future__ import annotations

import heapq
import platform
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fleet_server.compare_engine.data import DataSet, Rows, open_data
from fleet_server.compare_engine.errors import CompareError
from fleet_server.compare_engine.measures import MEASURES, RowVerdict
from fleet_server.services.quality.metrics import classifier_quality

#: Rows compared by default (and at most).
DEFAULT_LIMIT = 2000
MAX_LIMIT = 100_000
#: Inputs listed as disagreeing most, by default and at most.
DEFAULT_TOP = 10
MAX_TOP = 50


def compare_artifacts(
    *,
    baseline: Path,
    candidate: Path,
    data: Path,
    labels: Path | None = None,
    source_kind: str | None = None,
    limit: int = DEFAULT_LIMIT,
    top: int = DEFAULT_TOP,
) -> dict[str, Any]:
    """Compare two unpacked artifacts of the same model on ``data``; the result is the body of
    ``POST /api/v1/models/{name}/{candidate}/compare``. CompareError says what is wrong."""
    from agent.engine import BackendOptions, load_model
    from agent.errors import AgentError

    if not 1 <= limit <= MAX_LIMIT or not 0 <= top <= MAX_TOP:
        raise CompareError(f"limit must be 1..{MAX_LIMIT} and top 0..{MAX_TOP}")
    options = BackendOptions(threads=1)
    try:
        model_a = load_model(baseline, options=options)
        model_b = load_model(candidate, options=options)
    except AgentError as err:
        raise CompareError(f"cannot load: {err}") from err
    ma, mb = model_a.manifest, model_b.manifest
    if ma.name != mb.name:
        raise CompareError(f"different models: {ma.name} and {mb.name}")
    if ma.task != mb.task:
        raise CompareError(f"different tasks: {ma.task} and {mb.task}")
    factory = MEASURES.get(ma.task)
    if factory is None:
        raise CompareError(f"no measure for task {ma.task!r} (known: {', '.join(MEASURES)})")
    for manifest in (ma, mb):
        fixed = [s.shape[0] for s in manifest.inputs if s.shape and isinstance(s.shape[0], int)]
        batch = next((b for b in fixed if b != 1), None)
        if batch is not None:
            raise CompareError(f"{manifest.ref}: a fixed batch of {batch} (compare runs rows)")
    dataset = open_data(data, manifest_a=ma, manifest_b=mb, labels_file=labels)
    run = _Run(top=top)
    try:
        measure = factory(model_a, model_b)
        for index, feeds_a, feeds_b, label in _rows(dataset, limit):
            outputs_a, outputs_b = run.timed(index, model_a.infer, feeds_a, model_b.infer, feeds_b)
            run.note(index, measure.row(outputs_a, outputs_b), label)
    except AgentError as err:
        raise CompareError(f"inference failed: {err}") from err
    if run.rows == 0:
        raise CompareError(f"data {dataset.name} has no rows")
    agreement, figures = measure.summary()
    return {
        "baseline_version": ma.version,
        "task": ma.task,
        "samples": run.rows,
        "data": {
            "kind": source_kind or dataset.kind,
            "name": dataset.name[:200],
            "sha256": dataset.sha256,
        },
        "agreement": round(min(1.0, max(0.0, agreement)), 6),
        "measures": {k: round(v, 6) for k, v in figures.items()},
        "labelled": run.labelled() if ma.task == "classification" else None,
        "latency": run.latency(),
        "disagreements": run.disagreements(dataset.names),
    }


def _rows(
    dataset: DataSet, limit: int
) -> Iterator[tuple[int, dict[str, Any], dict[str, Any], str | None]]:
    """(row index, feeds of A, feeds of B, true label) one row at a time."""
    from converters.errors import InputError

    batches = dataset.batches(limit=limit)
    while True:
        try:
            batch: Rows | None = next(batches, None)
        except InputError as err:
            raise CompareError(str(err).replace("calibration data", "data", 1)) from err
        if batch is None:
            return
        rows = len(next(iter(batch.feeds_a.values())))
        for i in range(rows):
            yield (
                batch.start + i,
                {k: v[i : i + 1] for k, v in batch.feeds_a.items()},
                {k: v[i : i + 1] for k, v in batch.feeds_b.items()},
                batch.labels[i] if batch.labels is not None else None,
            )


class _Run:
    """What one pass gathers: latencies, the worst rows, and (label, A, B) class triples."""

    def __init__(self, *, top: int) -> None:
        self.top = top
        self.rows = 0
        self.ms_a: list[float] = []
        self.ms_b: list[float] = []
        self.worst: list[tuple[float, int, RowVerdict, str | None]] = []
        self.triples: list[tuple[str, str | None, str | None]] = []

    def timed(self, index: int, infer_a: Any, feeds_a: Any, infer_b: Any, feeds_b: Any) -> Any:
        clock = time.perf_counter_ns
        if index % 2 == 0:
            t0 = clock()
            out_a = infer_a(feeds_a)
            t1 = clock()
            out_b = infer_b(feeds_b)
            t2 = clock()
            self.ms_a.append((t1 - t0) / 1e6)
            self.ms_b.append((t2 - t1) / 1e6)
        else:
            t0 = clock()
            out_b = infer_b(feeds_b)
            t1 = clock()
            out_a = infer_a(feeds_a)
            t2 = clock()
            self.ms_b.append((t1 - t0) / 1e6)
            self.ms_a.append((t2 - t1) / 1e6)
        return out_a, out_b

    def note(self, index: int, verdict: RowVerdict, label: str | None) -> None:
        self.rows += 1
        if self.top:
            item = (verdict.score, -index, verdict, label)
            if len(self.worst) < self.top:
                heapq.heappush(self.worst, item)
            elif item[:2] > self.worst[0][:2]:
                heapq.heapreplace(self.worst, item)
        if label is not None:
            self.triples.append((label, verdict.class_a, verdict.class_b))

    def latency(self) -> dict[str, Any]:
        a, b = statistics.median(self.ms_a), statistics.median(self.ms_b)
        return {
            "baseline_ms": round(a, 4),
            "candidate_ms": round(b, 4),
            "ratio": round(b / a, 4) if a > 0 else 1.0,
            "runs": len(self.ms_a),
            "threads": 1,
            "host": socket.gethostname()[:200] or "unknown",
            "arch": platform.machine()[:64] or "unknown",
        }

    def labelled(self) -> dict[str, Any] | None:
        if not self.triples:
            return None
        scores = {}
        for side, pick in (("baseline", 1), ("candidate", 2)):
            quality = classifier_quality([(t[0], t[pick]) for t in self.triples])
            f1s = [s.f1 for s in quality.per_class.values()]
            scores[side] = {
                "accuracy": round(quality.accuracy or 0.0, 6),
                "macro_f1": round(float(np.mean(f1s)) if f1s else 0.0, 6),
            }
        return {
            "samples": len(self.triples),
            **scores,
            "accuracy_delta": round(
                scores["candidate"]["accuracy"] - scores["baseline"]["accuracy"], 6
            ),
            "macro_f1_delta": round(
                scores["candidate"]["macro_f1"] - scores["baseline"]["macro_f1"], 6
            ),
        }

    def disagreements(self, names: list[str]) -> list[dict[str, Any]]:
        ranked = sorted(self.worst, key=lambda item: (-item[0], -item[1]))
        return [
            {
                "index": -neg,
                "input": (names[-neg] if -neg < len(names) else f"row {-neg}")[:200],
                "score": round(score, 6),
                "baseline": verdict.said_a[:200],
                "candidate": verdict.said_b[:200],
                "label": label[:200] if label is not None else None,
            }
            for score, neg, verdict, label in ranked
            if round(score, 6) > 0
        ]
