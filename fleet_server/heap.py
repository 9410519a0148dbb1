"""The server process's C heap: a cap on glibc's malloc arenas, and freed pages handed back.

The soak (``bench/soak.py``, issue #16) found the server's RSS rising in steps, not a steady
leak: each burst of ingest (agents flushing their outboxes after a broker restart, an update's
events) decodes megabytes of telemetry at once on the ingest thread while the HTTP and MQTT
threads allocate in their own arenas; the Python heap (tracemalloc) falls back once the burst is
stored, but glibc keeps the freed pages of every arena resident. Two remedies, both here:

- :func:`cap_arenas`: at most ``n`` arenas (glibc's default is 8 per core), as
  ``MALLOC_ARENA_MAX`` would do, set with ``mallopt`` at start before the threads exist. An
  explicit ``MALLOC_ARENA_MAX`` in the environment wins.
- :class:`HeapTrimmer`: ``malloc_trim(0)`` every ``interval_s`` on a daemon thread: the free
  pages of every arena go back to the system (a few milliseconds; the next burst pays fresh
  page faults).

Both are no-ops where the C library is not glibc (musl, macOS). ``cap_arenas`` and ``trim``
live in :mod:`edgefleet.heap`, shared with the agent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edgefleet.heap import cap_arenas, is_glibc, trim

__all__ = ["HeapTrimmer", "cap_arenas", "trim"]

log = logging.getLogger(__name__)


class HeapTrimmer:
    """Calls :func:`trim` every ``interval_s`` until :meth:`stop` (0: never starts)."""

    def __init__(self, interval_s: float, *, trim_fn: Callable[[], bool] = trim) -> None:
        self.interval_s = interval_s
        self.trims = 0
        self._trim = trim_fn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0 or not is_glibc() or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._trim()
            except Exception:  # noqa: BLE001 - a failed trim must not end the server
                log.exception("malloc_trim failed")
                continue
            self.trims += 1

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5)
