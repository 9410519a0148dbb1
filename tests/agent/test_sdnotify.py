from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import SystemdNotifier


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = Path(tempfile.mkdtemp(prefix="sd")) / "n.sock"  # short: AF_UNIX paths are limited
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()
    path.unlink()


def test_protocol_messages(notify_socket: socket.socket) -> None:
    notifier = SystemdNotifier(min_interval_s=60)
    assert notifier.enabled
    notifier.ready("edgefleet agent d running")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=edgefleet agent d running"
    notifier.watchdog()
    notifier.watchdog()  # throttled: within min_interval_s
    notifier.stopping()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_without_systemd_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    notifier.ready("x")
    notifier.watchdog()


def test_a_vanished_socket_is_not_fatal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    SystemdNotifier().ready("x")  # logs a warning, raises nothing
