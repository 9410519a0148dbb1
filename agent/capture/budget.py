"""The capture budgets: samples per rolling hour and day, content bytes per rolling day.

Rolling windows (not calendar hours) so a burst at 10:59 and another at 11:00 cannot take twice
the hourly budget. The history is rebuilt at start from the disk queue's metadata, so a
restart (or kill -9) does not reset the budget while its samples are still waiting; samples
already uploaded and deleted are forgotten, which can let a restarted device capture up to one
more budget in that day — the server's own per-device budget (429) bounds that.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from edgefleet.contract import CapturePolicy

HOUR_S = 3600.0
DAY_S = 86_400.0


class CaptureBudget:
    """Admits a sample only while every budget of the policy has room; thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        #: (wall time, content bytes) of each sample admitted in the last day.
        self._admitted: deque[tuple[float, int]] = deque()

    def _trim(self, now: float) -> None:
        while self._admitted and self._admitted[0][0] <= now - DAY_S:
            self._admitted.popleft()

    def has_room(self, policy: CapturePolicy) -> str | None:
        """None if one more sample fits the counts, else which budget is spent."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            if len(self._admitted) >= policy.max_per_day:
                return "max_per_day"
            last_hour = sum(1 for t, _ in self._admitted if t > now - HOUR_S)
            if last_hour >= policy.max_per_hour:
                return "max_per_hour"
        return None

    def admit(self, policy: CapturePolicy, size: int) -> str | None:
        """Record a sample of ``size`` bytes if every budget has room; else say which is spent."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            if len(self._admitted) >= policy.max_per_day:
                return "max_per_day"
            if sum(1 for t, _ in self._admitted if t > now - HOUR_S) >= policy.max_per_hour:
                return "max_per_hour"
            if sum(b for _, b in self._admitted) + size > policy.max_bytes_per_day:
                return "max_bytes_per_day"
            self._admitted.append((now, size))
        return None

    def restore(self, admitted: list[tuple[float, int]]) -> None:
        """Samples admitted before a restart (time, bytes), e.g. those still queued on disk."""
        with self._lock:
            self._admitted.extend(sorted(admitted))
            self._trim(self._clock())
