"""Roll a model out to 1,000 simulated devices on loopback and time it.

A real fleet server (in-process uvicorn, SQLite or PostgreSQL), a real broker (Mosquitto if
reachable, else the embedded one), 1,000 devices speaking the real protocol from one process
(hil.fleet), each downloading the real bundle with its token. Every device first gets digits@1.0.0
by a plain assignment (timed: device side committed, server side all reported running); then
digits@2.0.0 goes out through the rollout engine — a 1 % canary, gates judged on the canary's
telemetry against the control group, then everyone — timed from the create call to the
rollout's ``completed`` with each stage's duration.

    python bench/rollout_bench.py [--devices 1000] [--broker private|embedded|mqtt://HOST:PORT]
        [--soak 5] [--database-url postgresql+psycopg://...]

A broker with Mosquitto's default per-client queue (max_queued_messages 1000) drops QoS 1
messages to the server during the update burst: the private broker is sized for a server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument(
        "--broker",
        default="private",
        help="'private' (a Mosquitto started here with a server-sized queue), 'embedded', or a URL",
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--soak", type=float, default=5.0, help="soak seconds per rollout stage")
    parser.add_argument("--telemetry-interval", type=float, default=2.0)
    args = parser.parse_args()

    from contextlib import nullcontext

    from bench.ingest_bench import private_mosquitto

    broker_url: str | None = None
    private = private_mosquitto() if args.broker == "private" else nullcontext(None)
    with private as private_url:
        if private_url is not None:
            args.broker = private_url
        return _run(args, broker_url)


def _run(args: argparse.Namespace, broker_url: str | None) -> int:
    from fleet_server.client.api import FleetClient
    from fleet_server.services.rollouts.state import RolloutState
    from hil.device import Behaviour
    from hil.fleet import FleetSimulator
    from tests.utils.artifacts import signed_digits_bundles
    from tests.utils.net import wait_for_port
    from tests.utils.server import live_server

    if args.broker != "embedded":
        try:
            wait_for_port("127.0.0.1", int(args.broker.rsplit(":", 1)[1]), timeout=2)
            broker_url = args.broker
        except (TimeoutError, ValueError):
            print(f"{args.broker} not reachable: using the embedded broker")
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-rollout-bench-"))
    bundles, _key = signed_digits_bundles(tmp / "bundles", ["1.0.0", "2.0.0"])
    with live_server(
        tmp, broker_url=broker_url, database_url=args.database_url, rollout_tick_s=0.5
    ) as server:
        client = FleetClient(server.url, server.token, timeout=60)
        for bundle in bundles:
            client.push_model(bundle)
        tag = f"bench{time.time_ns() % 10**8}"
        t0 = time.perf_counter()
        devices = []
        for i in range(args.devices):
            created = client.add_device(f"{tag}-{i:05d}", tags=[tag])
            devices.append((str(created["device_id"]), str(created["token"])))
        registered = time.perf_counter() - t0
        fleet = FleetSimulator(
            server.broker_url,
            server.url,
            devices,
            behaviour=Behaviour(latency_ms=2.0, per_version={"2.0.0": (1.9, 0.0)}),
            telemetry_interval_s=args.telemetry_interval,
        )
        t0 = time.perf_counter()
        fleet.start(connect_timeout=120)
        connected = time.perf_counter() - t0
        try:
            start = time.perf_counter()
            client.assign("digits", "1.0.0", tag=tag)
            device_done = server_done = None
            last_running = 0
            deadline = start + args.timeout
            while time.perf_counter() < deadline and server_done is None:
                time.sleep(0.25)
                if device_done is None and fleet.stats().updates_committed >= args.devices:
                    device_done = time.perf_counter() - start
                if device_done is not None:
                    rows = client.list_devices()
                    running = sum((d.get("running") or {}).get("version") == "1.0.0" for d in rows)
                    last_running = running
                    if running >= args.devices:
                        server_done = time.perf_counter() - start
            rollout = _staged_rollout(client, fleet, tag, args) if server_done else None
            stats = fleet.stats()
            ingest = client.ingest_stats()
        finally:
            fleet.stop()
            client.close()
    print(f"\nrollout of digits@1.0.0 to {args.devices} simulated devices "
          f"(broker {'embedded' if broker_url is None else broker_url})")  # fmt: skip
    print(f"  register devices over HTTP   {registered:8.1f} s")
    print(f"  connect all devices          {connected:8.1f} s")
    print(f"  all committed (device side)  {device_done if device_done else float('nan'):8.1f} s")
    print(f"  all running (server side)    {server_done if server_done else float('nan'):8.1f} s")
    print(
        f"  committed {stats.updates_committed}, failed {stats.updates_failed}; "
        f"server sees {last_running} running"
    )
    print(f"  server ingest: {ingest}")
    if rollout is not None:
        print(f"\nstaged rollout of digits@2.0.0 (canary 1 %, then 100 %, soak {args.soak:g} s)")
        for line in rollout["lines"]:
            print(f"  {line}")
        print(f"  rollout {rollout['state']} in {rollout['total']:.1f} s "
              f"(target: all committed in <= 60 s)")  # fmt: skip
    ok = (
        server_done is not None
        and rollout is not None
        and rollout["state"] == RolloutState.COMPLETED
    )
    return 0 if ok else 1


def _staged_rollout(client: Any, fleet: Any, tag: str, args: argparse.Namespace) -> dict[str, Any]:
    """digits@2.0.0 through the rollout engine; timings from the create call."""
    from fleet_server.services.rollouts.state import TERMINAL_STATES

    spec = {
        "model": "digits",
        "version": "2.0.0",
        "selector": {"tags": [tag]},
        "strategy": {"canary_percent": 1, "batches": [100], "soak_s": args.soak},
        "gates": {
            "error_rate": {"min_samples": 50},
            "latency_p95_ratio": {"min_samples": 5},
            "confidence_shift": {"min_samples": 50},
        },
    }
    start = time.perf_counter()
    created = client.create_rollout(spec)
    rid = int(created["id"])
    state = created["state"]
    device_done = None
    deadline = start + args.timeout
    while time.perf_counter() < deadline and state not in TERMINAL_STATES:
        time.sleep(0.25)
        if device_done is None and fleet.stats().running.get("digits@2.0.0") == args.devices:
            device_done = time.perf_counter() - start
        state = client.get_rollout(rid)["state"]
    total = time.perf_counter() - start
    if device_done is None and fleet.stats().running.get("digits@2.0.0") == args.devices:
        device_done = total
    report = client.rollout_report(rid)
    lines = []
    t0 = None
    for decision in report["decisions"]:
        from datetime import datetime

        ts = datetime.fromisoformat(decision["ts"])
        t0 = t0 or ts
        lines.append(
            f"+{(ts - t0).total_seconds():6.1f} s  {decision['action']:<14} stage "
            f"{decision['stage']}  {decision['reason'][:70]}"
        )
    gates = (report["rollout"].get("last_evaluation") or {}).get("gates") or []
    for gate in gates:
        lines.append(
            f"gate {gate['name']:<18} {gate['status']:<12} value {gate['value']} "
            f"(threshold {gate['threshold']}, n={gate['samples']})"
        )
    committed = device_done if device_done is not None else float("nan")
    lines.append(f"all {args.devices} devices on 2.0.0 (device side) {committed:.1f} s")
    return {"state": state, "total": total, "lines": lines}


if __name__ == "__main__":
    sys.exit(main())
