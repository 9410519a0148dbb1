"""Counters of the capture path, sent per interval in ``Telemetry.system`` as ``capture.*``.

Not in ``Telemetry.errors``: a spent budget, a sample dropped for disk space or a model without
reference statistics are how capture is meant to behave, and ``error_count`` feeds the error
rate that probation and rollout gates judge a model by.
"""

from __future__ import annotations

import threading


class CaptureCounters:
    """Thread-safe counts for the current interval; :meth:`flush` returns and resets them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        #: Since start (never reset), for tests and /metrics.
        self.totals: dict[str, int] = {}

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + n
            self.totals[kind] = self.totals.get(kind, 0) + n

    def flush(self) -> dict[str, float]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return {f"capture.{kind}": float(n) for kind, n in sorted(counts.items())}
