"""Roll a model out to 1,000 simulated devices on loopback and time it.

A real fleet server (in-process uvicorn, SQLite or PostgreSQL), a real broker (Mosquitto if
reachable, else the embedded one), 1,000 devices speaking the real protocol from one process
(hil.fleet), each downloading the real bundle with its token. Measures, from the assignment:
every device committed (device side), and every device reported running it (server side).

    python bench/rollout_bench.py [--devices 1000] [--broker private|embedded|mqtt://HOST:PORT]

A broker with Mosquitto's default per-client queue (max_queued_messages 1000) drops QoS 1
messages to the server during the update burst: the private broker is sized for a server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

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
    from hil.fleet import FleetSimulator
    from tests.utils.artifacts import build_digits_artifact
    from tests.utils.net import wait_for_port
    from tests.utils.server import live_server

    if args.broker != "embedded":
        try:
            wait_for_port("127.0.0.1", int(args.broker.rsplit(":", 1)[1]), timeout=2)
            broker_url = args.broker
        except (TimeoutError, ValueError):
            print(f"{args.broker} not reachable: using the embedded broker")
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-rollout-bench-"))
    with live_server(tmp, broker_url=broker_url, database_url=args.database_url) as server:
        client = FleetClient(server.url, server.token, timeout=60)
        client.push_model(build_digits_artifact(tmp / "art", version="1.0.0"))
        tag = f"bench{time.time_ns() % 10**8}"
        t0 = time.perf_counter()
        devices = []
        for i in range(args.devices):
            created = client.add_device(f"{tag}-{i:05d}", tags=[tag])
            devices.append((str(created["device_id"]), str(created["token"])))
        registered = time.perf_counter() - t0
        fleet = FleetSimulator(server.broker_url, server.url, devices, telemetry_interval_s=10.0)
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
    return 0 if server_done is not None else 1


if __name__ == "__main__":
    sys.exit(main())
