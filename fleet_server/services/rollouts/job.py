"""The rollout engine as a periodic job, and a small runner for periodic jobs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from fleet_server.services.rollouts.engine import RolloutEngine

log = logging.getLogger(__name__)


class PeriodicJob(Protocol):
    name: str
    interval_s: float

    def run(self, *, epoch: int) -> None:
        """One round of work; ``epoch`` fences it to the lease it ran under."""
        ...


class RolloutJob:
    name = "rollouts"

    def __init__(self, engine: RolloutEngine, *, interval_s: float) -> None:
        self.engine = engine
        self.interval_s = interval_s

    def run(self, *, epoch: int) -> None:
        self.engine.tick()


class PeriodicRunner:
    """Runs each job every ``interval_s`` on one thread; a failing round is logged, not fatal."""

    def __init__(self, jobs: Sequence[PeriodicJob]) -> None:
        self.jobs = list(jobs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="periodic-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        import time

        due = {job.name: 0.0 for job in self.jobs}
        while not self._stop.is_set():
            now = time.monotonic()
            for job in self.jobs:
                if now >= due[job.name]:
                    due[job.name] = now + job.interval_s
                    try:
                        job.run(epoch=0)
                    except Exception:  # noqa: BLE001 - the next round may succeed
                        log.exception("periodic job failed", extra={"job": job.name})
            wait = min(due.values()) - time.monotonic()
            self._stop.wait(max(0.01, wait))
