"""A fleet server replica as a real process (``python -m edgefleet server``), configured through
``EDGEFLEET_*`` variables, with its Prometheus metrics parsed for tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.utils.net import free_port

ROOT = Path(__file__).resolve().parents[2]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$")


class ReplicaProcess:
    def __init__(self, directory: Path, *, name: str, token: str, settings: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
        self.env.update(
            PYTHONPATH=str(ROOT),
            EDGEFLEET_DATA_DIR=str(directory / "data"),
            EDGEFLEET_PORT=str(self.port),
            EDGEFLEET_OPERATOR_TOKEN=token,
            EDGEFLEET_REPLICA_ID=name,
            EDGEFLEET_MQTT_CLIENT_ID=f"{name}.{self.port}",  # never a device id (settings)
            EDGEFLEET_LOG_LEVEL="warning",
        )
        self.env.update(settings)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = (self.directory / "stderr.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgefleet", "server"],
            cwd=self.directory,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.stderr()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {timeout} s: {self.stderr()[-2000:]}")

    def metrics(self) -> dict[str, float]:
        """Every sample as ``name{labels}`` → value."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        samples: dict[str, float] = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return samples

    def stderr(self) -> str:
        path = self.directory / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no lease release, no clean MQTT disconnect (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None) is not None:
            self.log.close()
