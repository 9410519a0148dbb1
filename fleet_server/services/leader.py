"""``LeaderLoop``: while this replica holds the ``driver`` lease, run the registered periodic jobs.

One thread per server. Every ``renew_s`` (and before a job whenever the lease is older than
that) it acquires-or-renews the lease; it trusts a lease only until ``ttl_s - margin_s`` after
the moment it *asked* for it, by its own monotonic clock, so a replica whose database calls
stall stops running jobs before any other replica can take the lease over. A job runs only after
that check; a job that raises is logged and counted and the loop goes on. A job must finish well
inside ``ttl_s - margin_s`` (the loop cannot stop a running job); jobs that write shared state
should fence those writes with the ``epoch`` they are given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from fleet_server.services.lease import LeaseError, acquire, release

log = logging.getLogger(__name__)

DRIVER_LEASE = "driver"


class PeriodicJob(Protocol):
    """Work only one replica may do at a time (rollout ticks, retention)."""

    name: str
    interval_s: float

    def run(self, *, epoch: int) -> None: ...


@dataclass
class LeaderStats:
    """What ``/metrics`` shows about this replica's leadership and its jobs."""

    leader: bool = False
    epoch: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, job: str, *, failed: bool) -> None:
        with self.lock:
            self.runs[job] = self.runs.get(job, 0) + 1
            if failed:
                self.failures[job] = self.failures.get(job, 0) + 1


class LeaderCollector(Collector):
    def __init__(self, stats: LeaderStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        with self._stats.lock:
            leader, epoch = self._stats.leader, self._stats.epoch
            runs, failures = dict(self._stats.runs), dict(self._stats.failures)
        yield GaugeMetricFamily(
            "edgefleet_leader", "1 while this replica holds the driver lease.", value=int(leader)
        )
        yield GaugeMetricFamily(
            "edgefleet_leader_epoch", "Epoch of the driver lease last held here.", value=epoch
        )
        run_family = CounterMetricFamily(
            "edgefleet_leader_job_runs", "Periodic job runs on this replica.", labels=["job"]
        )
        fail_family = CounterMetricFamily(
            "edgefleet_leader_job_failures", "Periodic job runs that raised.", labels=["job"]
        )
        for job in sorted(set(runs) | set(failures)):
            run_family.add_metric([job], runs.get(job, 0))
            fail_family.add_metric([job], failures.get(job, 0))
        yield run_family
        yield fail_family


class LeaderLoop:
    def __init__(
        self,
        *,
        holder: str,
        ttl_s: float,
        renew_s: float,
        name: str = DRIVER_LEASE,
        margin_s: float | None = None,
        stats: LeaderStats | None = None,
    ) -> None:
        if not 0 < renew_s < ttl_s:
            raise ValueError("renew_s must be positive and shorter than ttl_s")
        self.holder = holder
        self.name = name
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        #: Stop trusting the lease this long before it expires (clock rate drift, slow commits).
        self.margin_s = margin_s if margin_s is not None else max(0.1, ttl_s * 0.2)
        if self.margin_s >= ttl_s - renew_s:
            raise ValueError("the lease would lapse between renewals: lower renew_s or margin_s")
        self.stats = stats or LeaderStats()
        self._jobs: dict[str, PeriodicJob] = {}
        self._next_run: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._epoch: int | None = None
        self._valid_until = 0.0  # monotonic
        self._renewed_at = float("-inf")  # monotonic

    # -- jobs ----------------------------------------------------------------------------------
    def add_job(self, job: PeriodicJob) -> None:
        """Register ``job`` (before or after :meth:`start`); it first runs once this replica
        holds the lease."""
        if job.interval_s <= 0:
            raise ValueError(f"job {job.name!r}: interval_s must be positive")
        with self._lock:
            if job.name in self._jobs:
                raise ValueError(f"a job named {job.name!r} is already registered")
            self._jobs[job.name] = job
            self._next_run[job.name] = 0.0
        self._wake.set()

    @property
    def is_leader(self) -> bool:
        """Holds the lease now, by this replica's own (conservative) clock."""
        return self._epoch is not None and time.monotonic() < self._valid_until

    @property
    def epoch(self) -> int | None:
        return self._epoch if self.is_leader else None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, engine: Engine) -> None:
        if self._thread is not None:
            raise RuntimeError("leader loop already started")
        self._engine = engine
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edgefleet-leader", daemon=True)
        self._thread.start()

    def stop(self, *, release_lease: bool = True, timeout: float = 10.0) -> None:
        """Stop the loop (after a running job returns) and give the lease up for a quick
        takeover; ``release_lease=False`` leaves it to expire, as a crash would."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.error("leader loop did not stop in time", extra={"timeout_s": timeout})
        was_leader = self._epoch is not None
        self._lose()
        if release_lease and was_leader and self._engine is not None:
            try:
                release(engine=self._engine, name=self.name, holder=self.holder)
            except LeaseError as err:
                log.warning("releasing the lease failed", extra={"error": str(err)})

    # -- the loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() - self._renewed_at >= self.renew_s:
                self._renew()
            wait = self._run_due_jobs() if self.is_leader else self.renew_s
            wait = min(wait, max(0.0, self._renewed_at + self.renew_s - time.monotonic()))
            self._wake.wait(max(wait, 0.01))
            self._wake.clear()

    def _renew(self) -> None:
        assert self._engine is not None
        asked_at = time.monotonic()
        try:
            lease = acquire(
                engine=self._engine, name=self.name, holder=self.holder, ttl_s=self.ttl_s
            )
        except LeaseError as err:
            log.warning("lease renewal failed", extra={"lease": self.name, "error": str(err)})
            lease = None
            # Keep what we had: it stays trusted only until its own deadline.
            if self.is_leader:
                self._renewed_at = asked_at - self.renew_s + min(1.0, self.renew_s / 2)
                return
        self._renewed_at = asked_at
        if lease is None:
            if self._epoch is not None:
                log.warning("lost the lease", extra={"lease": self.name, "epoch": self._epoch})
            self._lose()
            return
        if lease.epoch != self._epoch or not self.stats.leader:
            log.info("holding the lease", extra={"lease": self.name, "epoch": lease.epoch})
        self._epoch = lease.epoch
        self._valid_until = asked_at + self.ttl_s - self.margin_s
        with self.stats.lock:
            self.stats.leader = True
            self.stats.epoch = lease.epoch

    def _lose(self) -> None:
        self._epoch = None
        self._valid_until = 0.0
        with self.stats.lock:
            self.stats.leader = False

    def _run_due_jobs(self) -> float:
        """Run every due job while the lease holds; seconds until the next one is due."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if self._stop.is_set():
                return 0.0
            if time.monotonic() < self._next_run[job.name]:
                continue
            if time.monotonic() - self._renewed_at >= self.renew_s:
                self._renew()
            epoch = self.epoch
            if epoch is None:
                return self.renew_s
            self._next_run[job.name] = time.monotonic() + job.interval_s
            failed = False
            try:
                job.run(epoch=epoch)
            except Exception:  # noqa: BLE001 - a failing job must not stop the others
                failed = True
                log.exception("periodic job failed", extra={"job": job.name, "epoch": epoch})
            self.stats.count(job.name, failed=failed)
        with self._lock:
            due = min(self._next_run.values(), default=time.monotonic() + self.renew_s)
        return max(0.0, due - time.monotonic())
