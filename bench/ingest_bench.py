"""Telemetry ingest throughput: publishers → broker → server ingest → database, zero loss?

Publishers run in separate processes (one paho client per process, speaking for many devices)
and send QoS 1 telemetry as fast as the broker acknowledges it. The server is real (in-process
uvicorn, its MQTT ingest and batched writer); the broker is a private Mosquitto tuned for a
server subscriber (``max_queued_messages``), or any URL you pass. Reports received/stored msg/s
at the server from the first to the last stored row, duplicates and loss, median over runs.

    python bench/ingest_bench.py [--messages 40000] [--publishers 2] [--devices 200] [--runs 3]
                                 [--workers 0,2] [--batch-size 500]
                                 [--databases sqlite,postgresql]
                                 [--statements executemany,arrays]
                                 [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]

``--broker embedded`` measures the server's own broker (in-process amqtt, default batch interval;
workers need MQTT v5, which it does not speak: use ``--workers 0``).

``--workers`` lists the ``ingest_workers`` settings to compare (0: ingest in the server
process; N: N worker processes in a shared-subscription group), each on each database.

``--statements`` lists the ``ingest_pg_statements`` settings to compare on PostgreSQL:
``executemany`` (one pipelined statement per row, the writer before 0.1.0) and ``arrays`` (one
statement per table, the default). Lanes are interleaved within each run and their order
alternates between runs (ABBA...), so a load change on a shared machine hits both; the report
gives each lane's median and the median of the per-run ratios of each lane to the first one
(paired), with the load average at the start and the end.

SQLite (a temp file) and PostgreSQL run side by side; for PostgreSQL the bench creates its own
database (``edgefleet_ingest_bench_<pid>``) on the given server and drops it afterwards, and
skips PostgreSQL (saying so) when the server is not reachable.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from multiprocessing.synchronize import Event
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


_BROKER_PIDS: list[int] = []
#: ``--broker embedded``: the server's own broker (amqtt, in the server process).
EMBEDDED = "embedded"
PUBLISH_WINDOW = 500
_TICK = os.sysconf("SC_CLK_TCK")

#: CPU seconds per message of each part: (server process, workers, publishers, broker,
#: PostgreSQL backends serving the bench database; 0 on SQLite).
Cpu = tuple[float, float, float, float, float]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (Linux /proc; 0 for what is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def backend_cpu(database_url: str | None) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``database_url`` (the server
    runs on this machine: its processes are in /proc), without the asking connection."""
    if database_url is None:
        return {}
    import sqlalchemy as sa

    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            pids = conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).scalars()
            return {pid: cpu_seconds([pid]) for pid in pids}
    finally:
        engine.dispose()


@contextmanager
def private_mosquitto() -> Iterator[str]:
    from tests.utils.net import free_port, wait_for_port

    binary = shutil.which("mosquitto")
    if binary is None:
        raise SystemExit("mosquitto is not installed; pass --broker URL")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="edgefleet-ingest-bench-"))
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 0\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    _BROKER_PIDS.append(proc.pid)
    try:
        wait_for_port("127.0.0.1", port, timeout=10)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def publish(url: str, devices: list[str], count: int, first_seq: int, go: Event) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgefleet.contract import Channel, Telemetry, encode, topic
    from edgefleet.mqtt import BrokerAddress

    addr = BrokerAddress.from_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.time_ns()}")
    # A bounded window of unacknowledged messages, as a device's outbox keeps: with the whole
    # run queued in paho at once, every PUBACK walks paho's queue and the publishers, not the
    # server, would be what is measured.
    window = threading.BoundedSemaphore(PUBLISH_WINDOW)
    client.on_publish = lambda *_: window.release()
    client.max_inflight_messages_set(PUBLISH_WINDOW)
    client.max_queued_messages_set(0)
    client.connect(addr.host, addr.port)
    client.loop_start()
    model = {"name": "digits", "version": "1.0.0"}
    payloads = []
    for i in range(count):
        device = devices[i % len(devices)]
        telemetry = Telemetry(
            device_id=device, seq=first_seq + i, interval_s=10, model=model,
            inference_count=100, latency_ms={"p50": 1.0, "p95": 2.0},
        )  # fmt: skip
        payloads.append((topic(device, Channel.TELEMETRY), encode(telemetry)))
    go.wait()
    for t, p in payloads:
        window.acquire()
        client.publish(t, p, qos=1)
    for _ in range(PUBLISH_WINDOW):  # every message acknowledged
        window.acquire(timeout=120)
    client.loop_stop()
    client.disconnect()


@contextmanager
def postgres_database(server_url: str) -> Iterator[str | None]:
    """A fresh database on ``server_url`` for the length of the bench, or None if unreachable."""
    import sqlalchemy as sa

    name = f"edgefleet_ingest_bench_{os.getpid()}"
    admin = sa.create_engine(f"{server_url.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as err:
        print(f"PostgreSQL at {server_url} not reachable, skipped: {str(err).splitlines()[0]}")
        admin.dispose()
        yield None
        return
    try:
        yield f"{server_url.rstrip('/')}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_once(
    args: argparse.Namespace,
    broker_url: str,
    database_url: str | None,
    workers: int,
    tmp: Path,
    statements: str,
) -> tuple[float, int, int, int, Cpu]:
    from fleet_server.client.api import FleetClient
    from tests.utils.server import live_server

    embedded = broker_url == EMBEDDED
    with live_server(
        tmp / f"run-{time.time_ns()}",
        broker_url=None if embedded else broker_url,
        database_url=database_url,
        ingest_queue_size=max(100_000, args.messages),
        ingest_workers=workers,
        ingest_batch_size=args.batch_size,
        ingest_pg_statements=statements,
        # The embedded broker in its defaults except device credentials: the publishers speak
        # for many devices from one connection.
        **({"mqtt_auth": False, "ingest_batch_interval_s": 0.2} if embedded else {}),
    ) as server:
        if embedded:
            broker_url = server.broker_url
        client = FleetClient(server.url, server.token, timeout=60)
        prefix = f"ing{time.time_ns() % 10**8}"
        ids = [f"{prefix}-{i:04d}" for i in range(args.devices)]
        for device_id in ids:
            client.add_device(device_id)
        ctx = mp.get_context("spawn")
        go = ctx.Event()
        per = args.messages // args.publishers
        procs = [
            ctx.Process(target=publish, args=(broker_url, ids[k :: args.publishers], per, 1, go))
            for k in range(args.publishers)
        ]
        for proc in procs:
            proc.start()
        time.sleep(3.0)  # let every publisher build its payloads before the clock starts
        stats = server.runtime.stats
        worker_pids = [p for p in server.runtime.workers.pids().values() if p] if workers else []
        groups = [[os.getpid()], worker_pids, [p.pid for p in procs if p.pid], _BROKER_PIDS]
        before = [cpu_seconds(g) for g in groups]
        pg_before = backend_cpu(database_url)
        go.set()
        start = time.perf_counter()
        total = per * args.publishers
        last_change, last_stored = start, -1
        while True:
            time.sleep(0.05)
            stored = stats.stored
            if stored != last_stored:
                last_stored, last_change = stored, time.perf_counter()
            if stored + stats.duplicates >= total or time.perf_counter() - last_change > 10:
                break
        elapsed = last_change - start
        after = [cpu_seconds(g) for g in groups]
        # Backends that connected during the run (the workers' pools) count from zero.
        pg_after = backend_cpu(database_url)
        before.append(sum(pg_before.get(pid, 0.0) for pid in pg_after))
        after.append(sum(pg_after.values()))
        done = max(stored, 1)
        cpu: Cpu = tuple((a - b) / done for a, b in zip(after, before, strict=True))  # type: ignore[assignment]
        for proc in procs:
            proc.join(60)
        rejected = sum(stats.totals()[0].values())
        client.close()
        rate = total / elapsed if stored >= total else stored / elapsed
        return rate, stored, total, rejected, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="0,2", help="ingest_workers values to compare")
    parser.add_argument("--batch-size", type=int, default=500, help="ingest_batch_size")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="databases to run: sqlite, postgresql"
    )
    parser.add_argument(
        "--statements",
        default="executemany,arrays",
        help="ingest_pg_statements values to compare on PostgreSQL (the first is the baseline)",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help="broker URL, or 'embedded' for the server's own (default: a private Mosquitto)",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL without a database name ('' skips PostgreSQL)",
    )
    args = parser.parse_args()
    databases = {d.strip().lower() for d in args.databases.split(",")}
    if not databases <= {"sqlite", "postgresql"}:
        parser.error(f"--databases: sqlite, postgresql (not {args.databases!r})")
    lanes_pg = [s.strip() for s in args.statements.split(",") if s.strip()]
    if not lanes_pg or not set(lanes_pg) <= {"executemany", "arrays"}:
        parser.error(f"--statements: executemany, arrays (not {args.statements!r})")
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-ingest-"))
    results: dict[str, list[tuple[float, int, int, int, Cpu]]] = {}
    load_before = os.getloadavg()
    with (
        private_mosquitto() if args.broker is None else _given(args.broker) as broker_url,
        postgres_database(args.postgres)
        if args.postgres and "postgresql" in databases
        else nullcontext() as pg_url,
    ):
        counts = [int(w) for w in args.workers.split(",")]
        for run in range(args.runs):
            for workers in counts:
                where = f"{workers} workers" if workers else "in-process"
                if "sqlite" in databases:
                    results.setdefault(f"SQLite, {where}", []).append(
                        run_once(args, broker_url, None, workers, tmp, "executemany")
                    )
                if pg_url is None:
                    continue
                # ABBA: the lanes' order alternates between runs.
                for statements in lanes_pg if run % 2 == 0 else lanes_pg[::-1]:
                    results.setdefault(f"PostgreSQL {statements}, {where}", []).append(
                        run_once(args, broker_url, pg_url, workers, tmp, statements)
                    )
    load_after = os.getloadavg()
    print(f"\ningest: {args.messages} QoS 1 telemetry messages from {args.publishers} publisher "
          f"processes, {args.devices} devices, {args.runs} run(s) each")  # fmt: skip
    print(f"  load average (1/5/15 min) at start {_load(load_before)}, at end {_load(load_after)}"
          f" on {os.cpu_count()} CPUs")  # fmt: skip
    print(f"  {'database, ingest':<34} {'median msg/s':>12} {'runs msg/s':<26} {'lost':>6} "
          f"{'rejected':>8}")  # fmt: skip
    for name, runs in results.items():
        rates = ", ".join(f"{r[0]:,.0f}" for r in runs)
        lost = sum(r[2] - r[1] for r in runs)
        rejected = sum(r[3] for r in runs)
        median = statistics.median(r[0] for r in runs)
        print(f"  {name:<34} {median:>12,.0f} {rates:<26} {lost:>6} {rejected:>8}")
    if len(lanes_pg) > 1 and pg_url is not None:
        print(f"\n  paired ratios to PostgreSQL {lanes_pg[0]} (same run; median, per run):")
        for workers in counts:
            where = f"{workers} workers" if workers else "in-process"
            base = results[f"PostgreSQL {lanes_pg[0]}, {where}"]
            for statements in lanes_pg[1:]:
                lane = results[f"PostgreSQL {statements}, {where}"]
                ratios = [b[0] / a[0] for a, b in zip(base, lane, strict=True)]
                each = ", ".join(f"{r:.2f}" for r in ratios)
                label = f"{statements}, {where}"
                print(f"  {label:<34} {statistics.median(ratios):>12.2f} {each}")
    print("\n  CPU per stored message, median µs (server process / ingest workers / publishers / "
          "broker / PostgreSQL backends of the bench database):")  # fmt: skip
    for name, runs in results.items():
        parts = [statistics.median(r[4][i] for r in runs) * 1e6 for i in range(5)]
        print(f"  {name:<34} " + " / ".join(f"{p:6.1f}" for p in parts) + f"  = {sum(parts):6.1f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{a:.1f}" for a in avg)


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    sys.exit(main())
