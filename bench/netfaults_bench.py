"""Network faults at full length: real agents in a network namespace, one table row per fault.

The scenarios of ``tests/hil/test_netfaults.py`` (``tests/utils/netfaults.py``) with the
issue's lengths by default: a 10 MB update under each fault, a 5-minute partition, a link that
flaps 20 s up / 20 s down, the server (or the broker) unreachable for the same time as the
partition. The agents keep their default download timeout (30 s) and probation (10 s at most)
unless told otherwise. Columns:

    drain s        fault healed → every telemetry/event seq queued so far stored
    retries        download attempts after a transient failure (agents' download.retries)
    bytes re-sent  bundle bytes an agent fetched a second time (download.refetched_bytes)
    update s       model assigned → the last agent's update.committed (fault time included);
                   rollout-partition: healed → every agent back on the previous version
    rollout        rollout-partition: the rollout's state after the fault (spec: aborted)
    MQTT dups      telemetry/events the server received twice (stored once by device+seq)
    lost           queued seqs never stored

Needs root, ``ip``, ``tc``, ``iptables`` and ``mosquitto``.

    python bench/netfaults_bench.py [--scenarios all|loss-5,partition,...] [--duration 300]
        [--ongoing 60] [--flap 20,20] [--bundle-kb 10240] [--agents 2]
        [--download-timeout 30] [--probation 10 | --no-probation] [--short]

``--short`` runs the CI lengths (3 s faults, 1 s / 2.5 s flaps, a 128 KiB bundle, 2 s download
timeout, no probation).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Faults that break the link for ``--duration``; the others hold for ``--ongoing``.
BREAKS = ("flap", "partition", "server-unreachable", "broker-unreachable", "rollout-partition")


def main() -> int:
    from tests.utils.netfaults import HEADER, SCENARIOS, NetFaultOptions, Step, run_netfaults

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="all", help="comma-separated names, or all")
    parser.add_argument("--duration", type=float, default=300.0, help="break length, s")
    parser.add_argument("--ongoing", type=float, default=60.0, help="loss/delay/rate length, s")
    parser.add_argument("--flap", default="20,20", help="up_s,down_s")
    parser.add_argument("--bundle-kb", type=int, default=10 * 1024)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--download-timeout", type=float, default=30.0)
    parser.add_argument("--probation", type=float, default=10.0)
    parser.add_argument("--no-probation", action="store_true")
    parser.add_argument("--short", action="store_true", help="the CI lengths")
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenarios == "all" else args.scenarios.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"netfaults_bench: unknown scenarios {unknown}; known: {list(SCENARIOS)}")
        return 2
    try:
        up_s, down_s = (float(v) for v in args.flap.split(","))
    except ValueError:
        print("netfaults_bench: --flap takes up_s,down_s")
        return 2
    if args.short:
        args.duration = args.ongoing = 3.0  # the rollout's partition: 30 s (below)
        up_s, down_s = 1.0, 2.5
        args.bundle_kb, args.download_timeout, args.no_probation = 128, 2.0, True
    steps = tuple(
        Step(n, args.duration if n in BREAKS else args.ongoing, flap=(up_s, down_s)) for n in names
    )
    options = NetFaultOptions(
        steps=steps,
        agents=args.agents,
        bundle_kb=args.bundle_kb,
        download_timeout_s=args.download_timeout,
        probation_s=None if args.no_probation else args.probation,
        recover_timeout_s=max(300.0, args.bundle_kb * 8 / 256 * args.agents * 1.5),
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="netfaults-") as work:
        results = run_netfaults(options, Path(work))
    print(HEADER)
    for result in results:
        print(result.row())
    print(f"\n{args.agents} agents, flap {up_s:g} s up / {down_s:g} s down, "
          f"download timeout {args.download_timeout:g} s, "
          f"probation {'off' if args.no_probation else f'{args.probation:g} s'}; "
          f"{time.monotonic() - started:.0f} s in all")  # fmt: skip
    for result in results:
        for agent in result.agents:
            print(
                f"  {result.scenario:<20} {agent.device_id}: fetched {agent.downloaded_bytes} B, "
                f"threads {agent.before.threads}->{agent.after.threads}, "
                f"fds {agent.before.fds}->{agent.after.fds}, "
                f"rss {agent.before.rss_kb / 1024:.1f}->{agent.after.rss_kb / 1024:.1f} MB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
