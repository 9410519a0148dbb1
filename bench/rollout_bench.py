"""Roll a model out to 10,000 simulated devices on this machine and time it, with the server's
CPU and memory.

A real fleet server (in-process uvicorn: this process *is* the server, the devices live in
other processes), a real broker (the external Mosquitto on 127.0.0.1:1883, or a private one),
PostgreSQL (a fresh database on ``--database-url``'s server, dropped afterwards) or SQLite, and
N devices speaking the real protocol — by default light asyncio clients in ``--processes``
worker processes (hil.swarm), or ``--sim paho`` for the paho simulator (hil.fleet, one
thread). Each device downloads the real bundle with its token.

Phases, each with wall time, server CPU seconds (user+sys of this process and its non-simulator
children) and the server's RSS:
  register   N devices over HTTP (``--register-workers`` at once)
  connect    every device connected, and the server has them all online
  assign     digits@1.0.0 to everyone by a plain assignment (device side all committed,
             server side all reported running)
  rollout    digits@2.0.0 through the rollout engine — a 1 % canary, gates judged on the
             canary's telemetry against the control group, then everyone — from the create call
             to ``completed``, with each stage's duration from the decisions
Ingest: messages received and stored per second over the assign and rollout phases.

    python bench/rollout_bench.py [--devices 10000] [--processes 2]
        [--broker mqtt://127.0.0.1:1883|private|embedded] [--database-url postgresql+psycopg://...]

Mosquitto's default per-client queue (max_queued_messages 1000) may drop QoS 1 messages to the
server in a burst: the bench reports ``received`` against what the devices sent.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Phase:
    name: str
    wall_s: float
    cpu_s: float
    rss_mb: float
    note: str = ""


class ServerMeter:
    """CPU seconds and RSS of the server: this process plus its children that are not the
    simulator's (``exclude``)."""

    def __init__(self, exclude: Callable[[], set[int]]) -> None:
        import psutil

        self._me = psutil.Process()
        self._exclude = exclude
        self._children_cpu: dict[int, float] = {}

    def cpu_s(self) -> float:
        times = self._me.cpu_times()
        total = times.user + times.system
        skip = self._exclude()
        for child in self._me.children(recursive=True):
            if child.pid in skip:
                continue
            try:
                ct = child.cpu_times()
                self._children_cpu[child.pid] = ct.user + ct.system
            except Exception:  # noqa: S112, BLE001 (a child that ended keeps its last reading)
                continue
        return total + sum(self._children_cpu.values())

    def rss_mb(self) -> float:
        return float(self._me.memory_info().rss) / 2**20

    @staticmethod
    def peak_rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def fresh_postgres(base: str) -> Iterator[str]:
    import psycopg

    parts = urlsplit(base)
    admin = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
    name = f"edgefleet_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--sim", choices=["light", "paho"], default="light")
    parser.add_argument("--processes", type=int, default=2, help="simulator processes (light)")
    parser.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        help="a URL, 'private' (a Mosquitto started here with a server-sized queue) or 'embedded'",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("EDGEFLEET_TEST_DATABASE_URL"),
        help="PostgreSQL server (a fresh database is made on it); unset: SQLite",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--soak", type=float, default=5.0, help="soak seconds per rollout stage")
    parser.add_argument("--telemetry-interval", type=float, default=30.0)
    parser.add_argument("--register-workers", type=int, default=16)
    parser.add_argument(
        "--session-expiry",
        type=int,
        default=120,
        help="the server's MQTT session expiry (0: a clean session)",
    )
    parser.add_argument("--rollout-tick", type=float, default=1.0)
    args = parser.parse_args()

    from bench.ingest_bench import private_mosquitto

    private = private_mosquitto() if args.broker == "private" else nullcontext(None)
    database = fresh_postgres(args.database_url) if args.database_url else nullcontext(None)
    with private as private_url, database as database_url:
        if private_url is not None:
            args.broker = private_url
        args.database_url = database_url
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from sqlalchemy import func
    from sqlmodel import Session, col, select

    from fleet_server.client.api import FleetClient
    from fleet_server.models import Device
    from fleet_server.services.rollouts.state import RolloutState
    from hil.device import Behaviour
    from hil.swarm import Swarm, raise_fd_limit
    from tests.utils.artifacts import signed_digits_bundles
    from tests.utils.net import wait_for_port
    from tests.utils.server import live_server

    raise_fd_limit(args.devices + 1024)  # the server's HTTP connections from the downloads
    broker_url: str | None = None
    if args.broker != "embedded":
        try:
            wait_for_port("127.0.0.1", int(args.broker.rsplit(":", 1)[1]), timeout=2)
            broker_url = args.broker
        except (TimeoutError, ValueError):
            print(f"{args.broker} not reachable: using the embedded broker")
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-rollout-bench-"))
    bundles, key = signed_digits_bundles(tmp / "bundles", ["1.0.0", "2.0.0"])
    phases: list[Phase] = []
    sim: Any = None
    meter = ServerMeter(lambda: set(sim.pids()) if sim is not None else set())
    behaviour = Behaviour(latency_ms=2.0, per_version={"2.0.0": (1.9, 0.0)})
    with live_server(
        tmp,
        broker_url=broker_url,
        database_url=args.database_url,
        rollout_tick_s=args.rollout_tick,
        trusted_keys=[key],
        # As deployed: a kept (short) session on MQTT v5, so the server's receive window is
        # ingest-sized. A clean 3.1.1 session gets Mosquitto's 20 in flight and 1,000 queued:
        # the connect burst of 10,000 devices (status + state each) overflows it and Mosquitto
        # drops what the server never sees ("Outgoing messages are being dropped").
        mqtt_session_expiry_s=args.session_expiry,
    ) as server:
        assert server.runtime.engine is not None
        engine = server.runtime.engine

        def count(*where: Any) -> int:
            with Session(engine) as session:
                return int(
                    session.exec(select(func.count()).select_from(Device).where(*where)).one()
                )

        def phase(name: str, start: float, cpu0: float, note: str = "") -> None:
            p = Phase(name, time.perf_counter() - start, meter.cpu_s() - cpu0, meter.rss_mb(), note)
            phases.append(p)
            load = os.getloadavg()[0]
            print(  # as it happens too: a run cut short still says how far it got
                f"[{name}] {p.wall_s:.1f} s, server CPU {p.cpu_s:.1f} s, RSS {p.rss_mb:.0f} MB, "
                f"load {load:.1f}; {note}",
                flush=True,
            )

        client = FleetClient(server.url, server.token, timeout=600)
        for bundle in bundles:
            client.push_model(bundle)
        tag = f"bench{time.time_ns() % 10**8}"
        t0, c0 = time.perf_counter(), meter.cpu_s()
        local = threading.local()

        def register(i: int) -> tuple[str, str]:
            if not hasattr(local, "client"):
                local.client = FleetClient(server.url, server.token, timeout=600)
            created = local.client.add_device(f"{tag}-{i:05d}", tags=[tag])
            return str(created["device_id"]), str(created["token"])

        with ThreadPoolExecutor(args.register_workers) as pool:
            devices = list(pool.map(register, range(args.devices)))
        phase("register", t0, c0, f"{args.register_workers} HTTP clients")

        if args.sim == "light":
            sim = Swarm(
                server.broker_url,
                server.url,
                devices,
                behaviour=behaviour,
                telemetry_interval_s=args.telemetry_interval,
                processes=args.processes,
            )
        else:
            from hil.fleet import FleetSimulator

            sim = FleetSimulator(
                server.broker_url,
                server.url,
                devices,
                behaviour=behaviour,
                telemetry_interval_s=args.telemetry_interval,
            )
        t0, c0 = time.perf_counter(), meter.cpu_s()
        sim.start(connect_timeout=args.timeout)
        connected = time.perf_counter() - t0
        online = _wait(lambda: count(col(Device.online)) >= args.devices, t0 + args.timeout)
        phase("connect", t0, c0, f"all connected {connected:.1f} s, server: all online "
              f"{_s(online, t0)}")  # fmt: skip
        rollout: dict[str, Any] | None = None
        ingest0 = client.ingest_stats()
        ingest_t0 = time.perf_counter()
        try:
            t0, c0 = time.perf_counter(), meter.cpu_s()
            client.assign("digits", "1.0.0", tag=tag)
            device_done = _wait(
                lambda: sim.stats().updates_committed >= args.devices, t0 + args.timeout
            )
            server_done = _wait(
                lambda: count(col(Device.running_version) == "1.0.0") >= args.devices,
                t0 + args.timeout,
            )
            phase("assign", t0, c0, f"device side all committed {_s(device_done, t0)}, "
                  f"server side all running {_s(server_done, t0)}")  # fmt: skip
            if server_done is not None:
                t0, c0 = time.perf_counter(), meter.cpu_s()
                rollout = _staged_rollout(client, sim, tag, args)
                phase("rollout", t0, c0, f"{rollout['state']}")
            stats = sim.stats()
            ingest1 = client.ingest_stats()
            ingest_s = time.perf_counter() - ingest_t0
            usage = sim.usage() if args.sim == "light" else None
        finally:
            sim.stop()
            client.close()
        peak = meter.peak_rss_mb()
    load = os.getloadavg()
    print(
        f"\n{args.devices} simulated devices ({args.sim}"
        f"{f', {args.processes} processes' if args.sim == 'light' else ''}), broker "
        f"{broker_url or 'embedded'}, database {'PostgreSQL' if args.database_url else 'SQLite'}, "
        f"telemetry every {args.telemetry_interval:g} s; load {load[0]:.1f} {load[1]:.1f}"
    )
    print(f"  {'phase':<10}{'wall s':>9}{'server CPU s':>14}{'server RSS MB':>15}")
    for p in phases:
        print(f"  {p.name:<10}{p.wall_s:9.1f}{p.cpu_s:14.1f}{p.rss_mb:15.0f}  {p.note}")
    print(f"  server peak RSS {peak:.0f} MB")
    received = ingest1["received"] - ingest0["received"]
    stored = ingest1["stored"] - ingest0["stored"]
    print(
        f"  ingest over {ingest_s:.0f} s: {received} received ({received / ingest_s:.0f}/s), "
        f"{stored} stored ({stored / ingest_s:.0f}/s); devices sent {stats.telemetry_sent} "
        f"telemetry in the whole run; rejected {ingest1.get('rejected')}"
    )
    print(f"  committed {stats.updates_committed}, failed {stats.updates_failed}")
    if usage is not None:
        print(f"  simulator: {usage.cpu_s:.0f} CPU s, {usage.max_rss_mb:.0f} MB peak RSS (summed)")
    if rollout is not None:
        print(f"\nstaged rollout of digits@2.0.0 (canary 1 %, then 100 %, soak {args.soak:g} s)")
        for line in rollout["lines"]:
            print(f"  {line}")
        print(f"  rollout {rollout['state']} in {rollout['total']:.1f} s")
    ok = rollout is not None and rollout["state"] == RolloutState.COMPLETED
    return 0 if ok else 1


def _s(value: float | None, start: float) -> str:
    return "never" if value is None else f"{value - start:.1f} s"


def _wait(check: Callable[[], bool], deadline: float, every: float = 0.5) -> float | None:
    while time.perf_counter() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(every)
    return None


def _staged_rollout(client: Any, fleet: Any, tag: str, args: argparse.Namespace) -> dict[str, Any]:
    """digits@2.0.0 through the rollout engine; timings from the create call."""
    from datetime import datetime

    from fleet_server.services.rollouts.state import TERMINAL_STATES

    spec = {
        "model": "digits",
        "version": "2.0.0",
        "selector": {"tags": [tag]},
        "strategy": {
            "canary_percent": 1,
            "batches": [100],
            "soak_s": args.soak,
            "update_timeout_s": args.timeout,
        },
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
        time.sleep(0.5)
        if device_done is None and fleet.stats().running.get("digits@2.0.0") == args.devices:
            device_done = time.perf_counter() - start
        state = client.get_rollout(rid)["state"]
    total = time.perf_counter() - start
    if device_done is None and fleet.stats().running.get("digits@2.0.0") == args.devices:
        device_done = total
    report = client.rollout_report(rid)
    lines = []
    created_at = None
    previous = None
    for decision in report["decisions"]:
        ts = datetime.fromisoformat(decision["ts"])
        created_at = created_at or ts
        step = (ts - previous).total_seconds() if previous else 0.0
        previous = ts
        lines.append(
            f"+{(ts - created_at).total_seconds():6.1f} s (+{step:5.1f}) "
            f"{decision['action']:<14} stage {decision['stage']}  {decision['reason'][:60]}"
        )
    gates = (report["rollout"].get("last_evaluation") or {}).get("gates") or []
    for gate in gates:
        lines.append(
            f"gate {gate['name']:<18} {gate['status']:<12} value {gate['value']} "
            f"(threshold {gate['threshold']}, n={gate['samples']})"
        )
    committed = f"{device_done:.1f} s" if device_done is not None else "never"
    lines.append(f"all {args.devices} devices on 2.0.0 (device side) {committed}")
    return {"state": state, "total": total, "lines": lines}


if __name__ == "__main__":
    sys.exit(main())
