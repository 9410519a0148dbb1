"""systemd's notify protocol (``Type=notify`` + ``WatchdogSec``), standard library only.

``READY=1`` once the agent is connected and serving, ``WATCHDOG=1`` from the main loop while
every worker thread is alive, ``STOPPING=1`` on shutdown. Without ``$NOTIFY_SOCKET`` (not under
systemd) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, *, min_interval_s: float = 1.0) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self._address = address or None
        self._min_interval = min_interval_s
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as err:
            log.warning("systemd notify failed", extra={"error": str(err)})

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def watchdog(self) -> None:
        """Ping the watchdog, at most once per ``min_interval_s``."""
        now = time.monotonic()
        if now - self._last_ping >= self._min_interval:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")
