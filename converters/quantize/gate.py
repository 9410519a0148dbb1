"""The latency gate: every candidate is timed against fp32, interleaved, and one slower than
fp32 on this host is never chosen.

:func:`benchmark` warms every session up, then runs ``rounds`` rounds; in each round every
session (in a rotating order) runs ``runs_per_round`` timed single calls, so drift in the
machine's state (frequency, caches, neighbours) hits all of them alike. The figure is the
median of all timed calls. :func:`gate` and :func:`choose` are pure decisions over the numbers
and are tested with injected measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p95_ms: float
    runs: int


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str
    speedup: float


def benchmark(
    sessions: Mapping[str, Any],
    feed: Mapping[str, Any],
    *,
    warmup: int,
    rounds: int,
    runs_per_round: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Median single-call latency of each session, measured interleaved."""
    import numpy as np

    names = list(sessions)
    inputs = dict(feed)
    for name in names:
        for _ in range(warmup):
            sessions[name].run(None, inputs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            session = sessions[name]
            for _ in range(runs_per_round):
                start = time.perf_counter_ns()
                session.run(None, inputs)
                times[name].append((time.perf_counter_ns() - start) / 1e6)
        if progress is not None and (r + 1) % max(1, rounds // 4) == 0:
            progress(f"benchmark round {r + 1}/{rounds}")
    return {
        name: Timing(
            p50_ms=float(np.median(values)),
            p95_ms=float(np.percentile(values, 95)),
            runs=len(values),
        )
        for name, values in times.items()
    }


def gate(fp32_ms: float, candidate_ms: float, *, min_speedup: float = 1.0) -> Verdict:
    """Accept only a candidate strictly faster than fp32 (by at least ``min_speedup``)."""
    speedup = fp32_ms / candidate_ms if candidate_ms > 0 else float("inf")
    if candidate_ms >= fp32_ms:
        return Verdict(
            False, f"slower than fp32 ({candidate_ms:.4f} ms vs {fp32_ms:.4f} ms)", speedup
        )
    if speedup < min_speedup:
        return Verdict(
            False, f"speed-up {speedup:.2f}x is below the required {min_speedup:.2f}x", speedup
        )
    return Verdict(True, f"{speedup:.2f}x faster than fp32", speedup)


def choose(latencies: Mapping[str, float], accepted: set[str]) -> str | None:
    """The fastest accepted candidate, or None."""
    eligible = [(ms, name) for name, ms in latencies.items() if name in accepted]
    return min(eligible)[1] if eligible else None
