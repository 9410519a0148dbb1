"""The driver lease on SQLite and PostgreSQL: one holder at a time, takeover after expiry with
a higher epoch, quick takeover after release, and leader loops whose jobs never overlap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine

from fleet_server.db import make_engine, migrate
from fleet_server.models.types import utcnow
from fleet_server.services.leader import LeaderLoop
from fleet_server.services.lease import LeaseError, acquire, current, release
from tests.fleet_server.helpers import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def engines(database_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines (as two replicas have) on one migrated database."""
    first, second = make_engine(database_url), make_engine(database_url)
    try:
        migrate(first)
        yield first, second
    finally:
        first.dispose()
        second.dispose()


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def test_acquire_renew_takeover_and_release(engines: tuple[Engine, Engine]) -> None:
    a, b = engines
    now = utcnow()
    first = acquire(engine=a, name="driver", holder="a", ttl_s=10, now=now)
    assert first is not None and first.epoch == 1
    # Held: the other contender gets nothing, however often it asks.
    assert acquire(engine=b, name="driver", holder="b", ttl_s=10, now=now) is None
    assert acquire(engine=b, name="driver", holder="b", ttl_s=10, now=now + _s(9)) is None
    # Renewal by the holder keeps the epoch and moves the expiry.
    renewed = acquire(engine=a, name="driver", holder="a", ttl_s=10, now=now + _s(5))
    assert renewed is not None and renewed.epoch == 1
    assert acquire(engine=b, name="driver", holder="b", ttl_s=10, now=now + _s(12)) is None
    # Expired: taken over, epoch + 1; the old holder is now refused.
    later = now + _s(16)
    taken = acquire(engine=b, name="driver", holder="b", ttl_s=10, now=later)
    assert taken is not None and taken.epoch == 2
    assert acquire(engine=a, name="driver", holder="a", ttl_s=10, now=later) is None
    stored = current(engine=a, name="driver")
    assert stored is not None and (stored.holder, stored.epoch) == ("b", 2)
    # Release by a non-holder does nothing; by the holder frees it at once.
    assert not release(engine=a, name="driver", holder="a")
    assert release(engine=b, name="driver", holder="b")
    back = acquire(engine=a, name="driver", holder="a", ttl_s=10, now=later)
    assert back is not None and back.epoch == 3
    # Leases are independent by name.
    other = acquire(engine=b, name="retention", holder="b", ttl_s=10, now=later)
    assert other is not None and other.epoch == 1


def _race(a: Engine, b: Engine, *, now: datetime, prefix: str) -> list[tuple[str, int]]:
    barrier = threading.Barrier(8)
    wins: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def contend(holder: str, engine: Engine) -> None:
        try:
            barrier.wait()
            lease = acquire(engine=engine, name="race", holder=holder, ttl_s=30, now=now)
            if lease is not None:
                wins.append((holder, lease.epoch))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [
        threading.Thread(target=contend, args=(f"{prefix}-{i}", (a, b)[i % 2])) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return wins


def test_concurrent_contenders_one_winner_per_round(engines: tuple[Engine, Engine]) -> None:
    """Eight threads on two engines race for a fresh lease name, round after round: exactly one
    wins each round (the statement is atomic), and each takeover raises the epoch by one."""
    a, b = engines
    base = utcnow()
    epochs: list[int] = []
    for round_no in range(6):
        # Every round starts with the lease expired.
        wins = _race(a, b, now=base + timedelta(seconds=100 * round_no), prefix=f"r{round_no}")
        assert len(wins) == 1, wins
        epochs.append(wins[0][1])
    assert epochs == [1, 2, 3, 4, 5, 6]


def test_bad_arguments_and_unsupported_database(engines: tuple[Engine, Engine]) -> None:
    a, _ = engines
    with pytest.raises(ValueError, match="ttl_s"):
        acquire(engine=a, name="driver", holder="a", ttl_s=0)
    with pytest.raises(ValueError, match="empty"):
        acquire(engine=a, name="driver", holder="", ttl_s=1)
    with pytest.raises(ValueError, match="renew_s"):
        LeaderLoop(holder="a", ttl_s=1, renew_s=2)
    with pytest.raises(ValueError, match="lapse"):
        LeaderLoop(holder="a", ttl_s=1, renew_s=0.9)


def test_unreachable_database_is_a_lease_error() -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    try:
        with pytest.raises(LeaseError, match="driver"):
            acquire(engine=engine, name="driver", holder="a", ttl_s=5)
    finally:
        engine.dispose()


class RecordingJob:
    """Records (start, end, epoch, replica) of every run; all loops share one log."""

    def __init__(self, replica: str, log: list[tuple[float, float, int, str]]) -> None:
        self.name = "record"
        self.interval_s = 0.02
        self.replica = replica
        self.log = log
        self.lock = threading.Lock()

    def run(self, *, epoch: int) -> None:
        start = time.monotonic()
        time.sleep(0.03)
        with self.lock:
            self.log.append((start, time.monotonic(), epoch, self.replica))


class FailingJob:
    name = "boom"
    interval_s = 0.05

    def run(self, *, epoch: int) -> None:
        raise RuntimeError("job failure for the test")


def _assert_no_overlap(log: list[tuple[float, float, int, str]]) -> None:
    runs = sorted(log)
    for (_, end, epoch, who), (start, _, next_epoch, next_who) in zip(runs, runs[1:], strict=False):
        assert start >= end, f"{who}@{epoch} still ran when {next_who}@{next_epoch} started"
        if next_who != who:
            assert next_epoch > epoch, "a takeover must raise the epoch"


def test_leader_loops_never_overlap_and_hand_over(engines: tuple[Engine, Engine]) -> None:
    a_engine, b_engine = engines
    log: list[tuple[float, float, int, str]] = []
    shared = threading.Lock()
    a = LeaderLoop(holder="replica-a", ttl_s=1.0, renew_s=0.2)
    b = LeaderLoop(holder="replica-b", ttl_s=1.0, renew_s=0.2)
    job_a, job_b = RecordingJob("replica-a", log), RecordingJob("replica-b", log)
    job_a.lock = job_b.lock = shared
    a.add_job(job_a)  # before start
    a.add_job(FailingJob())
    a.start(a_engine)
    wait_until(lambda: a.is_leader, timeout=5, what="replica a to lead")
    b.start(b_engine)
    b.add_job(job_b)  # after start
    b.add_job(FailingJob())
    try:
        time.sleep(0.8)
        assert a.is_leader and not b.is_leader
        assert a.stats.leader and not b.stats.leader
        # A crash (no release): b takes over only after the lease expires.
        stopped = time.monotonic()
        a.stop(release_lease=False)
        wait_until(lambda: b.is_leader, timeout=5, what="replica b to take over")
        assert time.monotonic() - stopped >= 0.7  # ttl 1.0 minus scheduling slack
        time.sleep(0.5)
        # A clean stop releases: a takes over again within about one renew period.
        a.start(a_engine)
        stopped = time.monotonic()
        b.stop()
        wait_until(lambda: a.is_leader, timeout=2, what="replica a to take over after release")
        assert time.monotonic() - stopped < 0.8
        time.sleep(0.3)
    finally:
        a.stop()
        b.stop()
    with shared:
        runs = list(log)
    assert {who for *_, who in runs} == {"replica-a", "replica-b"}
    _assert_no_overlap(runs)
    assert sorted({epoch for _, _, epoch, _ in runs}) == [1, 2, 3]
    # The failing job ran (and failed) on both, and did not stop the recording job.
    assert a.stats.failures["boom"] >= 1 and b.stats.failures["boom"] >= 1
    assert a.stats.runs["record"] >= 5 and b.stats.runs["record"] >= 5
    assert "record" not in a.stats.failures


def test_a_stalled_leader_stops_running_jobs_before_it_could_be_taken_over(
    engines: tuple[Engine, Engine],
) -> None:
    """The loop trusts the lease only until ttl - margin after it asked, by its own clock: a
    holder that cannot renew (database gone) stops running jobs before another could take over."""
    engine, _ = engines
    loop = LeaderLoop(holder="lonely", ttl_s=1.0, renew_s=0.2)
    log: list[tuple[float, float, int, str]] = []
    loop.add_job(RecordingJob("lonely", log))
    loop.start(engine)
    try:
        wait_until(lambda: loop.is_leader, timeout=5, what="leadership")
        stored = current(engine=engine, name="driver")
        assert stored is not None
        engine.dispose()
        # Make every further renewal fail: point the loop at a database that is not there.
        loop._engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
        cut = time.monotonic()
        wait_until(lambda: not loop.is_leader, timeout=3, what="the loop to give up")
        assert time.monotonic() - cut <= 1.0
        last_start = max(start for start, *_ in log)
        assert last_start < cut + 1.0 - loop.margin_s + 0.05
    finally:
        loop.stop(release_lease=False)
