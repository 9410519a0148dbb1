"""How often the rollout gates abort a harmless version, and how fast they stop a bad one.

Many staged rollouts (canary → 50 % → 100 %, the default strategy and gate policy) on simulated
heterogeneous fleets of 2 to 20 devices (``hil/gate_sim.py``: two device classes, per-device
speeds and input mixes, noisy p95s with load spikes, a warm-up interval after each update, a fifth
of the devices freshly enrolled with no history), each judged by the real evidence assembly and
gates at the engine's alphas; one tick is a one-minute telemetry interval. Candidates:

- ``identical``: byte-identical to the running model → the false-abort rate (and pauses);
- ``slow-1.5x``: 1.5x the p95 → the detection rate and the time to the abort;
- ``less-accurate``: top-1 accuracy 10 points lower and half of its inferences unsure;
- ``much-less-accurate``: 20 points lower and 70 % unsure.

    python bench/gate_bench.py [--rollouts 200] [--seed 0]

Measured (200 rollouts per candidate, seed 0, load average ~4-8 on 2 cores, 2026-12-07):
identical 0 % aborted, 4 % paused, 96 % completed; slow-1.5x 93 % aborted (median 9 min, p90 55),
4.5 % paused, 2.5 % completed; less-accurate 77 % aborted (median 6 min), 8.5 % paused;
much-less-accurate 84.5 % aborted (median 3 min), 11.5 % paused. The misses are the smallest
fleets, whose canary has no history and no device of its class to compare with.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hil.gate_sim import Candidate, Outcome, rollout  # noqa: E402 (after the path insert)

CANDIDATES = {
    "identical": Candidate(),
    "slow-1.5x": Candidate(latency_factor=1.5),
    "less-accurate": Candidate(accuracy_drop=0.10, low_confidence_share=0.5),
    "much-less-accurate": Candidate(accuracy_drop=0.20, low_confidence_share=0.7),
}
SIZES = (2, 4, 10, 20)


def summarise(name: str, outcomes: list[Outcome], seconds: float) -> str:
    n = len(outcomes)
    results = Counter(o.result for o in outcomes)
    gates = Counter(g for o in outcomes for g in o.failed)
    aborted = [o.ticks for o in outcomes if o.result == "aborted"]
    completed = [o.ticks for o in outcomes if o.result == "completed"]
    parts = [
        f"{name:<19} n={n}",
        f"aborted {results['aborted'] / n:6.1%}",
        f"paused {results['paused'] / n:5.1%}",
        f"completed {results['completed'] / n:6.1%}",
    ]
    if aborted:
        p90 = statistics.quantiles(aborted, n=10)[-1] if len(aborted) > 1 else aborted[0]
        parts.append(f"abort after median {statistics.median(aborted):.0f} min (p90 {p90:.0f})")
    if completed:
        parts.append(f"completion median {statistics.median(completed):.0f} min")
    if gates:
        parts.append("by " + ", ".join(f"{g} {c}" for g, c in gates.most_common()))
    parts.append(f"[{seconds:.1f} s]")
    return " | ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=200, help="per candidate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.rollouts} rollouts per candidate, fleets of {SIZES} devices, seed {args.seed}")  # noqa: T201
    for name, candidate in CANDIDATES.items():
        start = time.perf_counter()
        outcomes = [
            rollout(args.seed + i, SIZES[i % len(SIZES)], candidate) for i in range(args.rollouts)
        ]
        print(summarise(name, outcomes, time.perf_counter() - start), flush=True)  # noqa: T201
        for size in SIZES:
            sized = [o for i, o in enumerate(outcomes) if SIZES[i % len(SIZES)] == size]
            kinds = Counter(o.result for o in sized)
            print(
                f"    {size:>2} devices: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
            )  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
