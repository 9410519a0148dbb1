"""The per-device sequence number: one monotonic counter for every channel, across restarts.

The file ``<data_dir>/seq.json`` holds the first number *not yet reserved*. Numbers are
reserved in blocks (written atomically with fsync + rename before any of them is used), so a
crash skips at most one block and never reuses a number, and there is one write per block, not
per message. If the file is missing (a new device, or a reinstalled agent whose earlier numbers
the server still holds) or unreadable, the counter starts above the wall clock in microseconds,
which is above any number a device can have used: a reinstalled agent that started at 0 again
had its first messages dropped by the server as duplicates of the old install's (device, seq)
keys (15 of 15 in tests/fleet_server/test_device_clock.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

SEQ_FILE = "seq.json"
MAX_SEQ = 2**63 - 1


class SequenceCounter:
    def __init__(self, data_dir: Path, *, block: int = 100) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = data_dir / SEQ_FILE
        self._block = block
        self._lock = threading.Lock()
        self._next = self._load()
        self._reserved = self._next
        self._reserve()

    def _load(self) -> int:
        try:
            data = json.loads(self.path.read_text())
            value = data["next"]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_SEQ:
                raise ValueError(f"bad value {value!r}")
            return value
        except FileNotFoundError:
            floor = _clock_floor()
            log.info(
                "no sequence file; starting above the clock",
                extra={"path": str(self.path), "seq": floor},
            )
            return floor
        except (OSError, ValueError, KeyError, TypeError) as err:
            floor = _clock_floor()
            log.warning(
                "sequence file unreadable; restarting above the clock",
                extra={"path": str(self.path), "error": str(err), "seq": floor},
            )
            return floor

    def _reserve(self) -> None:
        self._reserved = min(self._next + self._block, MAX_SEQ)
        write_json_atomic(self.path, {"next": self._reserved})

    def next(self) -> int:
        """The next number; persisted before it is returned."""
        with self._lock:
            if self._next >= self._reserved:
                self._reserve()
            value = self._next
            self._next += 1
            return value


def _clock_floor() -> int:
    """The wall clock in microseconds: grows ~1e6/s, far faster than any device's counter."""
    return time.time_ns() // 1000


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON to ``path`` so a crash leaves either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
