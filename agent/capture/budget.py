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
    """Admits a sample only while every budget of the policy has room; thread-safe.

    O(1) per decision (amortised): the day's and the hour's admissions are two queues trimmed
    from the front, the day's bytes a running sum — a decision is taken on the inference thread,
    and a day may hold thousands of samples."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        #: (wall time, content bytes) of each sample admitted in the last day, oldest first.
        self._day: deque[tuple[float, int]] = deque()
        self._day_bytes = 0
        #: Wall times of the samples admitted in the last hour, oldest first.
        self._hour: deque[float] = deque()

    def _trim(self, now: float) -> None:
        day, hour = self._day, self._hour
        while day and day[0][0] <= now - DAY_S:
            self._day_bytes -= day.popleft()[1]
        while hour and hour[0] <= now - HOUR_S:
            hour.popleft()

    def _spent(self, policy: CapturePolicy) -> str | None:
        if len(self._day) >= policy.max_per_day:
            return "max_per_day"
        if len(self._hour) >= policy.max_per_hour:
            return "max_per_hour"
        return None

    def has_room(self, policy: CapturePolicy) -> str | None:
        """None if one more sample fits the counts, else which budget is spent."""
        with self._lock:
            self._trim(self._clock())
            return self._spent(policy)

    def admit(self, policy: CapturePolicy, size: int) -> str | None:
        """Record a sample of ``size`` bytes if every budget has room; else say which is spent."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            spent = self._spent(policy)
            if spent is not None:
                return spent
            if self._day_bytes + size > policy.max_bytes_per_day:
                return "max_bytes_per_day"
            self._add(now, size)
        return None

    def _add(self, at: float, size: int) -> None:
        self._day.append((at, size))
        self._day_bytes += size
        self._hour.append(at)

    def restore(self, admitted: list[tuple[float, int]]) -> None:
        """Samples admitted before a restart (time, bytes), e.g. those still queued on disk."""
        with self._lock:
            merged = sorted([*self._day, *admitted])
            self._day.clear()
            self._hour.clear()
            self._day_bytes = 0
            for at, size in merged:
                self._add(at, size)
            self._trim(self._clock())
