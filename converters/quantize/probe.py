"""A short paired latency probe, run before any candidate is calibrated in full or validated.

Latency does not depend on the calibrated ranges (the same kernels run whatever the scales),
so each candidate is built from a :data:`PROBE_ROWS`-row calibration and timed against the
fixed-shape fp32 model in a few interleaved rounds. A candidate that is not faster than fp32 on
this host in that probe cannot pass the latency gate (which needs a confidence interval above
1x) and is dropped with the probe's numbers; the others are ranked fastest first, so the
pipeline can stop validating candidates that cannot beat one already accepted.

:func:`round_runs` also sizes the gate: a round of a 100 ms detector needs 2-3 calls, not 20,
for its median to be meaningful, and 20 x 15 rounds x 3 models of it took minutes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from converters.quantize.gate import benchmark

#: Calibration rows the probe's candidates are built from (ranges do not change latency).
PROBE_ROWS = 2
#: Interleaved rounds in the probe: each gives one paired fp32/candidate ratio.
PROBE_ROUNDS = 5
#: Seconds one model's calls take in one round: the probe's, and the gate's at most.
PROBE_ROUND_S = 0.05
GATE_ROUND_S = 0.25
#: A candidate whose first calls are this much slower than fp32's is dropped without rounds
#: (int8 text classifiers ran 10-30x slower here: timing them for rounds is wasted time).
SCREEN_SLOWER = 2.0
#: A candidate slower than an accepted one by more than this (probe medians) cannot win.
CANNOT_WIN_MARGIN = 0.10


@dataclass(frozen=True)
class ProbeResult:
    """Probe medians (ms) and each candidate's median paired speed-up over fp32."""

    fp32_ms: float
    ms: dict[str, float]
    speedup: dict[str, float]
    rounds: int
    runs_per_round: int
    #: Dropped on their first calls (paired with fp32's), without rounds.
    screened: frozenset[str] = frozenset()
    #: Timed for fewer rounds: their drop was settled (name → why).
    settled: Mapping[str, str] = field(default_factory=dict)

    def why_dropped(self, name: str) -> str | None:
        """None when ``name`` was faster than fp32 in the probe, else the reason it is not."""
        ratio = self.speedup[name]
        if ratio > 1.0:
            return None
        if name in self.screened:
            return (
                f"latency probe: {ratio:.2f}x fp32 (fastest of 3 calls each, alternating with "
                f"fp32's): over {SCREEN_SLOWER:g}x slower on this host"
            )
        if name in self.settled:
            return (
                f"latency probe: {ratio:.2f}x fp32 ({self.ms[name]:.3f} vs {self.fp32_ms:.3f} "
                f"ms; {self.settled[name]}): not faster on this host"
            )
        return (
            f"latency probe: {ratio:.2f}x fp32 ({self.ms[name]:.3f} vs {self.fp32_ms:.3f} ms, "
            f"median of {self.rounds} paired rounds): not faster on this host"
        )


def call_ms(session: Any, feed: Mapping[str, Any], *, calls: int = 5) -> float:
    """The fastest of a few calls after one untimed call (first calls allocate): a model's
    own cost, which neighbours on a loaded host only ever add to (load 25-30 here made the
    median of 3 calls of a 1.3 ms classifier read 63 ms)."""
    inputs = dict(feed)
    session.run(None, inputs)
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter_ns()
        session.run(None, inputs)
        best = min(best, (time.perf_counter_ns() - start) / 1e6)
    return best


def round_runs(ms: float, *, round_s: float, most: int) -> int:
    """Calls per round so one model's round takes about ``round_s`` (1..``most``)."""
    if ms <= 0:
        return most
    return max(1, min(most, math.ceil(round_s * 1000 / ms)))


def probe(
    sessions: Mapping[str, Any], feed: Mapping[str, Any], *, baseline: str, fp32_ms: float
) -> ProbeResult:
    """Time every session against ``sessions[baseline]``, interleaved, in a short probe; one
    whose first calls are :data:`SCREEN_SLOWER` times slower than fp32's skips the rounds."""
    import numpy as np

    ms: dict[str, float] = {}
    speedup: dict[str, float] = {}
    screened: set[str] = set()
    timed = {baseline: sessions[baseline]}
    for name, session in sessions.items():
        if name == baseline:
            continue
        # Alternating calls, so a burst of load on the host hits both sides of the ratio.
        base_ms, first = _paired_calls(sessions[baseline], session, feed, calls=3)
        if first > SCREEN_SLOWER * base_ms:
            ms[name], speedup[name] = first, base_ms / first
            screened.add(name)
        else:
            timed[name] = session
    runs = round_runs(fp32_ms, round_s=PROBE_ROUND_S, most=10)
    timings = benchmark(
        timed,
        feed,
        # No warm-up: every session ran 4 calls in the screen above (fp32 more, in call_ms),
        # and 2 more each were 10 calls, 4 s, of an 800x608 detector here.
        warmup=0,
        rounds=PROBE_ROUNDS,
        runs_per_round=runs,
        baseline=baseline,
        # Dropped unless the median paired round is above 1x: its rank among the rounds.
        settle_rank=PROBE_ROUNDS // 2 + 1,
    )
    base = timings[baseline]
    for name, timing in timings.items():
        if name == baseline:
            continue
        # A settled session ran fewer rounds: its pairs are the rounds both ran.
        pairs = [f / c for f, c in zip(base.round_ms, timing.round_ms, strict=False) if c > 0]
        ms[name] = timing.p50_ms
        speedup[name] = float(np.median(pairs)) if pairs else 0.0
    return ProbeResult(
        fp32_ms=base.p50_ms,
        ms=ms,
        speedup=speedup,
        rounds=PROBE_ROUNDS,
        runs_per_round=runs,
        screened=frozenset(screened),
        settled={n: t.settled for n, t in timings.items() if t.settled is not None},
    )


def _paired_calls(
    base: Any, other: Any, feed: Mapping[str, Any], *, calls: int
) -> tuple[float, float]:
    """Fastest of ``calls`` calls of each session, alternating (after one untimed call each)."""
    inputs = dict(feed)
    base.run(None, inputs)
    other.run(None, inputs)
    best = [float("inf"), float("inf")]
    for _ in range(calls):
        for side, session in enumerate((base, other)):
            start = time.perf_counter_ns()
            session.run(None, inputs)
            best[side] = min(best[side], (time.perf_counter_ns() - start) / 1e6)
    return best[0], best[1]


def cannot_win(probe_ms: float, best_accepted_ms: float | None) -> str | None:
    """Why a candidate need not be validated: it is slower (in the probe) than one accepted."""
    if best_accepted_ms is None or probe_ms <= best_accepted_ms * (1 + CANNOT_WIN_MARGIN):
        return None
    return (
        f"cannot win: its probe ({probe_ms:.3f} ms) is more than {CANNOT_WIN_MARGIN:.0%} "
        f"slower than an accepted candidate's ({best_accepted_ms:.3f} ms)"
    )
