"""A brake on password guessing at the embedded broker, per user name and per source address.

Before, 100 wrong MQTT passwords in a row were each checked and answered at once. Now each
key — a user name, a source address — counts its consecutive failed logins; after
``free_failures`` of them the key is locked for ``lockout_s``, doubled with each further
failure up to ``max_lockout_s``. While a key is locked a CONNECT with it is refused at once
(CONNACK 0x03, server unavailable: clients retry later) without its password being checked, so
a guesser gets one try per lock period (measured: 100 wrong passwords in a burst → 5 checked,
95 refused unchecked). A correct password clears its keys.

The legitimate holder is never locked out for long: a lock ends ``max_lockout_s`` (default
30 s) after the last *checked* failure, and refusals do not extend it. A user name that last
logged in from an address is, from there, subject only to the lock of that (user name, address)
pair: a device keeps reconnecting while someone elsewhere guesses its password, and while a
misconfigured neighbour behind the same address (the same host, a NAT) locks that address for
new names; someone guessing its password from its own address is still locked by the pair.
Memory is bounded: at most ``max_tracked`` keys and as many remembered addresses, the least
recently used dropped first.

The table, the lockout arithmetic (``DoublingLockout``) and the metric shape are
:mod:`fleet_server.services.throttle`'s, shared with the HTTP throttle; what is the broker's own
is which keys a login charges and who passes a locked one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fleet_server.broker.config import AuthThrottleConfig
from fleet_server.services.throttle.metrics import (
    Family,
    SnapshotCollector,
    ThrottleMetrics,
    ThrottleSnapshot,
)
from fleet_server.services.throttle.policies import DoublingLockout, Streak
from fleet_server.services.throttle.table import FailureTable, RecentMap

METRICS = ThrottleMetrics(
    failures=Family(
        "edgefleet_mqtt_auth_failures",
        "Embedded broker logins refused for a wrong user name or password (checked).",
    ),
    refused=Family(
        "edgefleet_mqtt_auth_throttled",
        "Embedded broker logins refused unchecked while their user name or address was "
        "locked after repeated failures.",
    ),
    blocked=Family(
        "edgefleet_mqtt_auth_locked",
        "User names and source addresses the embedded broker refuses for now.",
    ),
)

_Key = tuple[str, str]


def _keys(username: str, address: str) -> tuple[_Key, _Key, _Key]:
    """What one login charges: its user name, its source address and the pair."""
    return ("user", username), ("addr", address), ("pair", f"{username}\n{address}")


class AuthThrottle:
    """Thread-safe; the broker asks :meth:`locked` before checking a password, then reports
    the outcome with :meth:`failed` or :meth:`succeeded`."""

    def __init__(
        self, config: AuthThrottleConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        policy = DoublingLockout(
            free_failures=config.free_failures,
            lockout_s=config.lockout_s,
            max_lockout_s=config.max_lockout_s,
        )
        self._streaks: FailureTable[_Key, Streak] = FailureTable(policy, config.max_tracked)
        self._good: RecentMap[str, str] = RecentMap(config.max_tracked)  # user → last address
        self._failures = 0
        self._refused = 0

    @property
    def failures(self) -> int:
        """Failed logins whose password was checked (wrong user name or password)."""
        return self._failures

    @property
    def refused(self) -> int:
        """Logins refused unchecked because their user name or address was locked."""
        return self._refused

    def locked(self, *, username: str, address: str) -> float:
        """Seconds until this login may be checked (0: check it now). A positive answer is
        counted as a refusal."""
        now = self._clock()
        user, addr, pair = _keys(username, address)
        with self._lock:
            left = self._streaks.wait(pair, now)
            if self._good.get(username) != address:
                left = max(left, self._streaks.wait(addr, now), self._streaks.wait(user, now))
            if left > 0:
                self._refused += 1
            return left

    def failed(self, *, username: str, address: str) -> None:
        """A checked login failed: count it against the user name, the address and the pair."""
        now = self._clock()
        with self._lock:
            self._failures += 1
            for key in _keys(username, address):
                self._streaks.charge(key, now)

    def succeeded(self, *, username: str, address: str) -> None:
        """A correct password: forget its streaks, remember where this user logged in."""
        with self._lock:
            for key in _keys(username, address):
                self._streaks.forget(key)
            self._good.put(username, address)

    @property
    def locked_keys(self) -> int:
        """User names and addresses locked right now."""
        return self.snapshot().blocked

    @property
    def tracked(self) -> int:
        with self._lock:
            return len(self._streaks) + len(self._good)

    def snapshot(self) -> ThrottleSnapshot:
        """Counters and table sizes, consistent with each other (for ``/metrics``)."""
        now = self._clock()
        with self._lock:
            return ThrottleSnapshot(
                failures={"": self._failures},
                refused={"": self._refused},
                clients=len(self._streaks),
                blocked=self._streaks.blocked(now),
                known=len(self._good),
            )


class AuthThrottleCollector(SnapshotCollector):
    """``/metrics``: the embedded broker's failed and throttled logins."""

    def __init__(self, throttle: AuthThrottle) -> None:
        super().__init__(throttle.snapshot, METRICS)
