"""The drift demo's timeline: each step with its numbers, printed as it happens and kept for the
summary (seconds since the start and since the drift)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass
class Timeline:
    #: Progress lines go here (stderr with --json: stdout is the JSON alone).
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    started: float = field(default_factory=time.monotonic)
    drift_at: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, what: str, **numbers: Any) -> None:
        now = time.monotonic()
        since = None if self.drift_at is None else round(now - self.drift_at, 1)
        self.events.append(
            {"t_s": round(now - self.started, 1), "since_drift_s": since, "event": what, **numbers}
        )
        print(
            f"[demo] t+{now - self.started:6.1f} s  {what}  {numbers or ''}",
            file=self.out,
            flush=True,
        )
