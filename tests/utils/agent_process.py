"""Real agent processes for end-to-end tests: ``edgefleet agent run`` with its JSON log in a
file, and what it queued (its debug ``queued`` lines) and still holds in its outbox."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
OUTBOX_FILE = "outbox.db"  # agent.service.OUTBOX_FILE (not imported: agent code stays out)


class AgentRun:
    """One ``edgefleet agent run`` process; its stderr (JSON log lines) goes to a file."""

    def __init__(self, config: Path, log: Path, *, prefix: Sequence[str] = ()) -> None:
        self.log = log
        self._out: IO[bytes] = log.open("ab")
        # ``prefix``: e.g. ``ip netns exec NAME`` (it execs, so the pid is the agent's).
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=self._out,
        )

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()


@dataclass
class Device:
    device_id: str
    token: str
    data_dir: Path
    config: Path
    logs: list[Path] = field(default_factory=list)
    run: AgentRun | None = None
    #: Command prefix the agent runs under (a network namespace).
    prefix: list[str] = field(default_factory=list)

    def start(self) -> None:
        log = self.config.with_name(f"{self.device_id}-{len(self.logs)}.log")
        self.logs.append(log)
        self.run = AgentRun(self.config, log, prefix=self.prefix)

    def queued(self) -> dict[str, list[int]]:
        """channel → seqs this device's agent processes logged as queued, in order."""
        out: dict[str, list[int]] = {}
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if '"queued"' not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("msg") == "queued":
                    out.setdefault(str(entry["channel"]), []).append(int(entry["seq"]))
        return out

    def outbox_seqs(self) -> set[int]:
        """The seqs of the telemetry and events waiting in the outbox now."""
        path = self.data_dir / OUTBOX_FILE
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(
                "SELECT payload FROM message WHERE kind IN ('telemetry', 'event')"
            ).fetchall()
        finally:
            conn.close()
        return {int(json.loads(bytes(row[0]))["seq"]) for row in rows}

    def outbox(self, kind: str | None = None) -> int:
        path = self.data_dir / OUTBOX_FILE
        if not path.exists():
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            if kind is None:
                return int(conn.execute("SELECT COUNT(*) FROM message").fetchone()[0])
            sql = "SELECT COUNT(*) FROM message WHERE kind = ?"
            return int(conn.execute(sql, (kind,)).fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # not created yet
        finally:
            conn.close()


def agent_toml(device: Device, *, mqtt_url: str, server_url: str, interval_s: float) -> str:
    return f"""
device_id = "{device.device_id}"
server_url = "{server_url}"
token = "{device.token}"
data_dir = "{device.data_dir}"
log_level = "debug"

[mqtt]
url = "{mqtt_url}"
username = "{device.device_id}"
password = "{device.token}"
keepalive = 10
connect_wait_s = 0.5

[telemetry]
interval_s = {interval_s}
"""
