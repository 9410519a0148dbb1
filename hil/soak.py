"""The soak: N agents and a server under continuous inference, periodic updates and broker
restarts for a set time; what grows.

A real ``edgefleet server`` process (SQLite in the run's folder, or ``--database-url``), a
private Mosquitto with persistence (restarted every ``broker_restart_s``), N real
``edgefleet agent run`` processes serving a folder of digits at 20 Hz, the two signed digits
models assigned in turn every ``update_s``. Every ``sample_s`` it samples (with
:mod:`hil.probe`, the measuring code ``edgefleet hil run --scenario soak`` uses on a board)
each agent's and the server's RSS, descriptors and threads, the agents' outbox rows and the
database's size; after the warm-up each series gets a least-squares slope per hour. Target:
flat — agent RSS slope < 1 MB/h, no descriptor or thread growth.

Used by ``bench/soak.py`` (1 h by default) and ``tests/hil/test_soak.py`` (~80 s).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hil import probe
from hil.ssh.local import ROOT, LocalServer, digit_images

#: Series whose slopes the soak reports (per-agent values are means over the agents).
SERIES = (
    "agent_rss_mb", "agent_fds", "agent_threads", "server_rss_mb", "server_fds",
    "server_threads", "outbox", "db_mb",
)  # fmt: skip


@dataclass(frozen=True)
class SoakOptions:
    duration_s: float = 3600.0
    agents: int = 3
    warmup_s: float | None = None  # None: a quarter of the run, at most 10 minutes
    sample_s: float = 5.0
    update_s: float = 300.0
    broker_restart_s: float = 600.0
    broker_down_s: float = 3.0
    telemetry_s: float = 2.0
    database_url: str | None = None
    say: Callable[[str], None] = field(default=lambda line: None)

    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else min(600.0, self.duration_s / 4)


@dataclass
class SoakResult:
    rows: list[dict[str, Any]]
    trend: dict[str, Any]
    updates: int
    broker_restarts: int
    agents_alive: bool
    update_errors: int = 0  # assignments the server refused or did not answer


class _Agent:
    def __init__(self, config: Path, log: Path) -> None:
        self.data_dir = config.with_suffix("")
        self._log: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def outbox(self) -> int:
        path = self.data_dir / "outbox.db"  # agent.service.OUTBOX_FILE (agent code stays out)
        if not path.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
                return int(conn.execute("SELECT COUNT(*) FROM message").fetchone()[0])
        except sqlite3.Error:
            return 0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log.close()


def _config(path: Path, *, device: dict[str, Any], server: LocalServer, inputs: Path,
            telemetry_s: float) -> Path:  # fmt: skip
    data = path.with_suffix("")
    path.write_text(f"""
device_id = {json.dumps(device["device_id"])}
server_url = {json.dumps(server.url)}
token = {json.dumps(device["token"])}
data_dir = {json.dumps(str(data))}
trusted_keys = [{json.dumps(str(server.public_key))}]

[mqtt]
url = {json.dumps(server.broker_url)}
username = {json.dumps(device["device_id"])}
password = {json.dumps(device["token"])}
keepalive = 10
connect_wait_s = 0.5

[telemetry]
interval_s = {telemetry_s}

[input]
type = "folder"
path = {json.dumps(str(inputs))}
pattern = "*.png"
loop = true
rate_hz = 20.0
""")
    return path


def _db_mb(server: LocalServer, database_url: str | None) -> float:
    if database_url is None:
        files = (server.work / "server").glob("edgefleet.db*")
        return sum(f.stat().st_size for f in files if f.is_file()) / 1e6
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    finally:
        engine.dispose()
    return float(size or 0) / 1e6


def _sample(t0: float, agents: list[_Agent], server: LocalServer,
            database_url: str | None) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {"t": round(time.time() - t0, 2)}
    parts = [s for s in (probe.process_sample(a.proc.pid) for a in agents) if s is not None]
    n = max(1, len(parts))
    row["agents"] = len(parts)
    for key in ("rss_mb", "fds", "threads"):
        row[f"agent_{key}"] = round(sum(p[key] for p in parts) / n, 3)
    srv = probe.process_sample(server.pid) if server.pid is not None else None
    for key in ("rss_mb", "fds", "threads"):
        row[f"server_{key}"] = round(srv[key], 3) if srv else None
    row["outbox"] = sum(a.outbox() for a in agents)
    row["db_mb"] = round(_db_mb(server, database_url), 3)
    return row


def run_soak(options: SoakOptions, work: Path) -> SoakResult:
    """Run the soak in ``work``; every process it started is stopped when it returns."""
    from fleet_server.client.api import FleetClient, FleetClientError
    from tests.utils.mosquitto import PrivateMosquitto
    from tests.utils.net import restartable_port

    say = options.say
    with ExitStack() as stack:
        broker = PrivateMosquitto(work, persistent=True, port=restartable_port())
        stack.callback(broker.cleanup)
        broker.start()
        server = LocalServer(work / "server-run", host="127.0.0.1", broker_url=broker.url,
                             database_url=options.database_url)  # fmt: skip
        server.work.mkdir(parents=True, exist_ok=True)
        stack.callback(server.stop)
        server.start()
        client = FleetClient(server.url, server.token, timeout=120)  # a loaded machine
        stack.callback(client.close)
        refs = server.push_models(client)
        inputs = work / "inputs"
        digit_images(inputs)
        tag = f"soak{time.time_ns() % 10**8}"
        agents: list[_Agent] = []
        for i in range(options.agents):
            device = client.add_device(f"{tag}-{i}", tags=[tag])
            config = _config(work / f"agent-{i}.toml", device=device, server=server,
                             inputs=inputs, telemetry_s=options.telemetry_s)  # fmt: skip
            agents.append(_Agent(config, work / f"agent-{i}.log"))
        stack.callback(lambda: [a.stop() for a in agents])
        name, version = refs[0].split("@")
        client.assign(name, version, tag=tag)
        say(f"{options.agents} agents, server pid {server.pid}, broker {broker.url}; "
            f"{options.duration_s:.0f} s")  # fmt: skip
        t0 = time.time()
        rows: list[dict[str, Any]] = []
        updates = restarts = update_errors = 0
        next_update = options.update_s
        next_restart = options.broker_restart_s
        while (elapsed := time.time() - t0) < options.duration_s:
            if elapsed >= next_update:
                updates += 1
                name, version = refs[updates % 2].split("@")
                try:
                    client.assign(name, version, tag=tag)
                except FleetClientError as err:  # a busy server's 500 must not end the soak
                    update_errors += 1
                    say(f"update {updates} at {elapsed:.0f} s failed: {err}")
                next_update += options.update_s
            if elapsed >= next_restart:
                restarts += 1
                broker.stop()
                time.sleep(options.broker_down_s)
                broker.start()
                next_restart += options.broker_restart_s
            rows.append(_sample(t0, agents, server, options.database_url))
            if len(rows) % 12 == 1:
                say(json.dumps(rows[-1]))
            time.sleep(max(0.0, options.sample_s - (time.time() - t0 - rows[-1]["t"])))
        alive = all(a.proc.poll() is None for a in agents)
    clean = [r for r in rows if r.get("server_rss_mb") is not None]
    trend = probe.trend(clean, warmup_s=options.warmup(), keys=SERIES)
    return SoakResult(rows=rows, trend=trend, updates=updates, broker_restarts=restarts,
                      agents_alive=alive, update_errors=update_errors)  # fmt: skip


def verdict(trend: dict[str, Any]) -> dict[str, bool]:
    """The soak's targets, judged on the slopes: flat RSS, no descriptor or thread growth."""

    def slope(key: str) -> float:
        return float((trend.get(key) or {}).get("slope_per_h", float("inf")))

    return {
        "agent_rss_flat": slope("agent_rss_mb") < probe.FLAT_RSS_MB_PER_H,
        "server_rss_flat": slope("server_rss_mb") < probe.FLAT_RSS_MB_PER_H,
        "no_fd_growth": slope("agent_fds") <= 0.5 and slope("server_fds") <= 0.5,
        "no_thread_growth": slope("agent_threads") <= 0.5 and slope("server_threads") <= 0.5,
    }
