"""What the SSH runner does on this machine: build the wheel, run a fleet server the board
can reach, make the signed models the scenarios ship.

The server is ``edgefleet server`` in a subprocess (its embedded broker, SQLite in a temporary
folder), listening on the address the board reached us from (``$SSH_CONNECTION`` on the
board), so nothing else on this machine's interfaces is opened. It can be stopped and started
again on the same ports and data (the outage scenario).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING

from edgefleet import wheel
from hil.ssh.errors import HilError

if TYPE_CHECKING:
    from fleet_server.client.api import FleetClient

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "digits"
VERSIONS = ("1.0.0", "2.0.0")


def build_wheel(out: Path) -> Path:
    """This tree's wheel (:func:`edgefleet.wheel.build_wheel`), its failure a ``HilError``."""
    try:
        return wheel.build_wheel(out)
    except wheel.WheelBuildError as exc:
        raise HilError(str(exc)) from exc


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """``edgefleet server`` on ``host`` (HTTP and embedded broker), restartable."""

    def __init__(
        self,
        work: Path,
        *,
        host: str,
        broker_url: str | None = None,
        database_url: str | None = None,
    ) -> None:
        self.work = work
        self.host = host
        self.port = free_port(host)
        self.broker_port = free_port(host)
        self.external_broker = broker_url
        self.database_url = database_url
        self.token = secrets.token_urlsafe(24)
        self.keys = work / "keys"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def broker_url(self) -> str:
        return self.external_broker or f"mqtt://{self.host}:{self.broker_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def public_key(self) -> Path:
        return self.keys / "signing.pub.pem"

    def start(self) -> None:
        from edgefleet.signing import generate_keypair

        if not self.public_key.exists():
            self.keys.mkdir(parents=True, exist_ok=True)
            generate_keypair(self.keys / "signing.pem", self.public_key)
        env = {
            **os.environ,
            "EDGEFLEET_OPERATOR_TOKEN": self.token,
            "EDGEFLEET_TRUSTED_KEYS": str(self.public_key),
            "EDGEFLEET_EMBEDDED_BROKER_HOST": self.host,
            "PYTHONUNBUFFERED": "1",
        }
        args = [sys.executable, "-m", "edgefleet", "server", "--data-dir",
                str(self.work / "server"), "--host", self.host, "--port", str(self.port),
                "--public-url", self.url]  # fmt: skip
        if self.external_broker:
            args += ["--broker-url", self.external_broker]
        else:
            args += ["--broker-port", str(self.broker_port)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self._log = (self.work / "server.log").open("ab")
        self._proc = subprocess.Popen(  # noqa: S603
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = (self.work / "server.log").read_text(errors="replace")[-1500:]
                raise HilError(f"the local fleet server exited ({self._proc.returncode}): {tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise HilError(f"the local fleet server on {self.url} did not answer within 90 s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def push_models(self, client: FleetClient) -> list[str]:
        """Train, convert and sign the two digits classifiers; push them. Their refs."""
        from edgefleet.demo import _train_and_convert

        private = (self.keys / "signing.pem").read_bytes()
        (self.work / "models").mkdir(exist_ok=True)
        refs = []
        for version in VERSIONS:
            # The demo's converter says what it made on stdout: here it goes to stderr, so
            # stdout stays the report (``--json``).
            with contextlib.redirect_stdout(sys.stderr):
                artifact = _train_and_convert(self.work / "models", version, private)
            client.push_model(artifact)
            refs.append(f"{MODEL_NAME}@{version}")
        return refs


def digit_images(folder: Path, count: int = 40) -> None:
    """Held-out digits as PNGs: what the board's agent serves in a loop."""
    from edgefleet.demo import _write_inputs

    _write_inputs(folder, count=count, offset=1400)
