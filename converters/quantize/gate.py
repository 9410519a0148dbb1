"""The latency gate: every candidate is timed against fp32, interleaved, and one that is not
faster than fp32 *beyond the measurement's noise* on this host is never chosen.

:func:`benchmark` warms every session up, then runs ``rounds`` rounds; in each round every
session (in a rotating order) runs ``runs_per_round`` timed single calls, so drift in the
machine's state (frequency, caches, neighbours) hits all of them alike. The figure is the
median of all timed calls; each round's own median is kept too.

:func:`gate` pairs the rounds: round *i*'s fp32 median over the candidate's is one speed-up
sample, and the distribution-free confidence interval of their median (order statistics of a
Binomial(n, 1/2), Hollander & Wolfe ch. 3) must lie above 1: a candidate at 1.01x whose rounds
say 0.97-1.05x is noise and is rejected. Below 6 rounds no 95 % interval exists and the gate
falls back to the point estimate, saying so. :func:`confirm_alone` times the chosen pair each
alone, because interleaving two sessions call by call can distort small models (caches shared
between them). :func:`gate` and :func:`choose` are pure decisions over the numbers and are
tested with injected measurements.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Coverage of the speed-up interval the gate requires above 1.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p95_ms: float
    runs: int
    #: Median of each round's calls, in round order (empty when measured as one block).
    round_ms: tuple[float, ...] = ()
    #: Why its timing stopped before the last round (its rejection was settled), else None.
    settled: str | None = None


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
    baseline: str | None = None,
    settle_rank: int | None = None,
) -> dict[str, Timing]:
    """Median single-call latency of each session, measured interleaved.

    With ``baseline`` and ``settle_rank``, a session whose paired rounds against the baseline
    already settle its rejection (:func:`converters.quantize.early_stop.timing_settled`) leaves
    the rotation; its :class:`Timing` covers the rounds it ran and says why it stopped."""
    import numpy as np

    names = list(sessions)
    inputs = dict(feed)
    for name in names:
        for _ in range(warmup):
            sessions[name].run(None, inputs)
    times: dict[str, list[float]] = {name: [] for name in names}
    per = max(1, runs_per_round)
    settled: dict[str, str] = {}
    for r in range(rounds):
        live = [n for n in names if n not in settled]
        shift = r % len(live)
        for name in live[shift:] + live[:shift]:
            session = sessions[name]
            for _ in range(runs_per_round):
                start = time.perf_counter_ns()
                session.run(None, inputs)
                times[name].append((time.perf_counter_ns() - start) / 1e6)
        if baseline is not None and settle_rank is not None and r + 1 < rounds:
            settled.update(_settled(times, live, baseline, per=per, rank=settle_rank))
        if progress is not None and (r + 1) % max(1, rounds // 4) == 0:
            progress(f"benchmark round {r + 1}/{rounds}")
    return {
        name: Timing(
            p50_ms=float(np.median(values)),
            p95_ms=float(np.percentile(values, 95)),
            runs=len(values),
            round_ms=_round_medians(values, per),
            settled=settled.get(name),
        )
        for name, values in times.items()
    }


def _round_medians(values: Sequence[float], per: int) -> tuple[float, ...]:
    import numpy as np

    return tuple(float(np.median(values[i : i + per])) for i in range(0, len(values), per))


def _settled(
    times: Mapping[str, Sequence[float]], live: Sequence[str], baseline: str, *, per: int, rank: int
) -> dict[str, str]:
    """The live sessions whose rejection the rounds so far settle, and why."""
    from converters.quantize.early_stop import timing_settled

    base = _round_medians(times[baseline], per)
    out: dict[str, str] = {}
    for name in live:
        if name == baseline:
            continue
        mine = _round_medians(times[name], per)
        ratios = [f / c for f, c in zip(base, mine, strict=False) if c > 0]
        why = timing_settled(ratios, rank=rank)
        if why is not None:
            out[name] = why
    return out


def interval_rank(n: int, *, confidence: float = CONFIDENCE) -> int | None:
    """The order statistic :func:`median_interval` takes as its low end for ``n`` samples (the
    k-th smallest), or None when no interval exists (n < 6 at 95 %)."""
    alpha = (1.0 - confidence) / 2
    k, tail = 0, 0.0
    while k < n:
        nxt = tail + math.comb(n, k) / 2**n
        if nxt > alpha:
            break
        tail, k = nxt, k + 1
    return k or None


def median_interval(
    samples: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Distribution-free interval for the median of ``samples`` with at least ``confidence``
    coverage: the k-th smallest and k-th largest, k the largest with P(Bin(n, 1/2) < k) <=
    (1 - confidence) / 2. None when n is too small for any such interval (n < 6 at 95 %)."""
    n = len(samples)
    k = interval_rank(n, confidence=confidence)
    if k is None:
        return None
    ordered = sorted(samples)
    return ordered[k - 1], ordered[n - k]


def gate(fp32: Timing, candidate: Timing, *, min_speedup: float = 1.0) -> Verdict:
    """Accept only a candidate faster than fp32 beyond noise (by at least ``min_speedup``)."""
    fp32_ms, candidate_ms = fp32.p50_ms, candidate.p50_ms
    speedup = fp32_ms / candidate_ms if candidate_ms > 0 else float("inf")
    stopped = f"; {candidate.settled}" if candidate.settled is not None else ""
    if candidate_ms >= fp32_ms:
        return Verdict(
            False,
            f"slower than fp32 ({candidate_ms:.4f} ms vs {fp32_ms:.4f} ms{stopped})",
            speedup,
        )
    if candidate.settled is not None:
        return Verdict(
            False, f"not faster beyond noise: {speedup:.2f}x ({candidate.settled})", speedup
        )
    if speedup < min_speedup:
        return Verdict(
            False, f"speed-up {speedup:.2f}x is below the required {min_speedup:.2f}x", speedup
        )
    pairs = [f / c for f, c in zip(fp32.round_ms, candidate.round_ms, strict=False) if c > 0]
    interval = median_interval(pairs)
    if interval is None:
        return Verdict(
            True, f"{speedup:.2f}x faster than fp32 ({len(pairs)} rounds: no noise check)", speedup
        )
    low, high = interval
    span = f"{CONFIDENCE:.0%} CI {low:.2f}-{high:.2f}x over {len(pairs)} paired rounds"
    if low <= 1.0:
        return Verdict(False, f"not faster beyond noise: {speedup:.2f}x ({span})", speedup)
    return Verdict(True, f"{speedup:.2f}x faster than fp32 ({span})", speedup)


def confirm_alone(
    sessions: Mapping[str, Any], feed: Mapping[str, Any], *, warmup: int, runs: int
) -> dict[str, Timing]:
    """Each session timed alone, one after the other (no interleaving): the check that an
    interleaved win is not an artefact of two sessions sharing caches call by call."""
    return {
        name: benchmark({name: session}, feed, warmup=warmup, rounds=1, runs_per_round=runs)[name]
        for name, session in sessions.items()
    }


def choose(latencies: Mapping[str, float], accepted: set[str]) -> str | None:
    """The fastest accepted candidate, or None."""
    eligible = [(ms, name) for name, ms in latencies.items() if name in accepted]
    return min(eligible)[1] if eligible else None


def choose_confirmed(
    sessions: Mapping[str, Any],
    feed: Mapping[str, Any],
    latencies: Mapping[str, float],
    accepted: set[str],
    *,
    baseline: str,
    warmup: int,
    runs: int,
) -> tuple[str | None, dict[str, str]]:
    """The fastest accepted candidate that is still faster than ``baseline`` when each is timed
    alone; returns it (or None) and the reason for each candidate that failed that check."""
    refused: dict[str, str] = {}
    remaining = set(accepted)
    base_ms: float | None = None  # the baseline alone is timed once, not once per candidate
    while (name := choose(latencies, remaining)) is not None:
        wanted = (
            {name: sessions[name]}
            if base_ms is not None
            else {baseline: sessions[baseline], name: sessions[name]}
        )
        alone = confirm_alone(wanted, feed, warmup=warmup, runs=runs)
        if base_ms is None:
            base_ms = alone[baseline].p50_ms
        cand_ms = alone[name].p50_ms
        if cand_ms < base_ms:
            return name, refused
        refused[name] = (
            f"faster only when interleaved: timed alone {cand_ms:.4f} ms vs "
            f"{baseline} {base_ms:.4f} ms"
        )
        remaining.discard(name)
    return None, refused
