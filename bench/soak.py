"""Soak: N agents and a server under continuous inference, periodic updates and broker
restarts for a set time; RSS, descriptors, threads, outbox and database growth with their
least-squares slopes after the warm-up (``hil/soak.py``; target: agent RSS < 1 MB/h, no
descriptor or thread growth).

    python bench/soak.py [--duration 3600] [--agents 3] [--update-every 300]
                         [--broker-restart-every 600] [--warmup S] [--json FILE]
                         [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from hil.soak import SERIES, SoakOptions, run_soak, verdict

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds (default 1 h)")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--update-every", type=float, default=300.0)
    parser.add_argument("--broker-restart-every", type=float, default=600.0)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=None, help="default min(10 min, 1/4)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", type=Path, help="write every sample and the trend here")
    args = parser.parse_args()
    if not 10 <= args.duration <= 7 * 86400 or not 1 <= args.agents <= 50:
        print("soak: --duration 10 s to 7 days, --agents 1-50", file=sys.stderr)
        return 2
    options = SoakOptions(
        duration_s=args.duration, agents=args.agents, update_s=args.update_every,
        broker_restart_s=args.broker_restart_every, sample_s=args.sample_every,
        warmup_s=args.warmup, database_url=args.database_url,
        say=lambda line: print(f"[soak] {line}", flush=True),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="edgefleet-soak-") as tmp:
        result = run_soak(options, Path(tmp))
    trend = result.trend
    print(
        f"\nsoak {args.duration:.0f} s, {args.agents} agents, {result.updates} updates "
        f"({result.update_errors} failed), {result.broker_restarts} broker restarts, "
        f"warm-up {trend['warmup_s']:.0f} s, "
        f"{trend['samples']} samples after it; agents alive at the end: {result.agents_alive}"
    )
    print(f"{'series':<16}{'first':>10}{'last':>10}{'max':>10}{'slope/h':>12}")
    for key in SERIES:
        row = trend.get(key)
        if row:
            print(f"{key:<16}{row['first']:>10.2f}{row['last']:>10.2f}{row['max']:>10.2f}"
                  f"{row['slope_per_h']:>+12.3f}")  # fmt: skip
    judged = verdict(trend)
    print("  ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in judged.items()))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "trend": trend,
                    "verdict": judged,
                    "rows": result.rows,
                    "updates": result.updates,
                    "update_errors": result.update_errors,
                    "broker_restarts": result.broker_restarts,
                },
                indent=1,
            )
        )
    return 0 if all(judged.values()) and result.agents_alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
