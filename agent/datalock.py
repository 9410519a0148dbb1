"""One agent per data directory: an exclusive ``flock`` on ``<data_dir>/agent.lock``.

Two agents on one ``data_dir`` (a second one started by mistake) would share the outbox, the
sequence numbers and the committed model, and corrupt all three. The first agent holds the
lock for its whole life and writes its pid into the file; a second one fails at once with one
line naming that pid. The lock is the kernel's: it dies with the process that holds it, so a
lock left by an agent killed with ``kill -9`` is free again, and a pid in the file is only
informative, never trusted to decide anything.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from agent.errors import AgentError

LOCK_FILE = "agent.lock"
#: How long a refused agent waits for the holder's pid to appear (the holder writes it right
#: after it took the lock; a read in between sees an empty file).
PID_WAIT_S = 1.0


class DataDirBusyError(AgentError):
    """Another live process holds the data directory's lock."""

    def __init__(self, message: str, *, holder_pid: int | None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


class DataDirLock:
    """The held lock; :meth:`release` (or the process ending) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, root: Path) -> DataDirLock:
        """Take the lock of ``root`` (created if missing) or raise DataDirBusyError."""
        root.mkdir(parents=True, exist_ok=True)
        path = root / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise AgentError(f"data_dir {root}: cannot open {LOCK_FILE}: {err.strerror}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder is not None else "a process whose pid is not known"
            raise DataDirBusyError(
                f"data_dir {root} is in use by another agent ({who}); stop it or use another "
                "data_dir",
                holder_pid=holder,
            ) from None
        except OSError as err:
            os.close(fd)
            raise AgentError(f"data_dir {root}: cannot lock {LOCK_FILE}: {err.strerror}") from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Free the lock (idempotent). The file stays: deleting it would race a new holder."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    deadline = time.monotonic() + PID_WAIT_S
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit() and 0 < int(text) < 2**31:
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
