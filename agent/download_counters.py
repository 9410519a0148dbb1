"""Counters of bundle downloads, sent per interval in ``Telemetry.system`` as ``download.*``.

Kinds (see ``agent.download``): ``bytes`` received, ``refetched_bytes`` received a second
time, ``retries``, ``resumes``, ``restarts``. Not in ``Telemetry.errors``: a resumed transfer
is the network being a network, not a failed input.
"""

from __future__ import annotations

import threading

KINDS = ("bytes", "refetched_bytes", "retries", "resumes", "restarts")


class DownloadCounters:
    """Thread-safe counts for the current interval; :meth:`flush` returns and resets them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._totals: dict[str, int] = dict.fromkeys(KINDS, 0)

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + n
            self._totals[kind] = self._totals.get(kind, 0) + n

    def totals(self) -> dict[str, int]:
        """Since start (never reset), for ``/metrics`` and tests."""
        with self._lock:
            return dict(self._totals)

    def flush(self) -> dict[str, float]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return {f"download.{kind}": float(n) for kind, n in sorted(counts.items())}
