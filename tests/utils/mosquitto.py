"""A private Mosquitto process on a free loopback port, for tests that stop or reconfigure it.

With ``persistent=True`` it saves sessions (and their queued QoS 1 messages) on SIGTERM into a
world-writable directory of its own: Mosquitto started as root drops to its own user before
saving, and pytest's ``tmp_path`` is not reachable for that user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.utils.net import free_port, wait_for_port

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def require_mosquitto() -> str:
    """The mosquitto binary, or skip (fail under EDGEFLEET_REQUIRE_SERVICES=1)."""
    if MOSQUITTO is None:
        if os.environ.get("EDGEFLEET_REQUIRE_SERVICES") == "1":
            pytest.fail("the mosquitto binary is required (EDGEFLEET_REQUIRE_SERVICES=1)")
        pytest.skip("the mosquitto binary is not installed")
    return MOSQUITTO


class PrivateMosquitto:
    def __init__(
        self,
        directory: Path,
        *,
        persistent: bool = False,
        extra: str = "",
        port: int | None = None,
    ) -> None:
        self.binary = require_mosquitto()
        self.port = port or free_port()
        self.store: Path | None = None
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if persistent:
            self.store = Path(tempfile.mkdtemp(prefix="edgefleet-mosquitto-"))
            self.store.chmod(0o777)
            lines += ["persistence true", f"persistence_location {self.store}/"]
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, timeout=10)
        # Something else may have taken the port while this broker was down (another test's
        # free_port()): then Mosquitto exits at once and the port answers for someone else.
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited at start (port {self.port} taken?)")

    def stop(self) -> None:
        """SIGTERM: a persistent broker saves its sessions first."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: nothing is saved, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def cleanup(self) -> None:
        self.kill()
        if self.store is not None:
            shutil.rmtree(self.store, ignore_errors=True)


@contextmanager
def private_mosquitto(
    directory: Path, *, persistent: bool = False, start: bool = True
) -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto(directory, persistent=persistent)
    if start:
        broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()
