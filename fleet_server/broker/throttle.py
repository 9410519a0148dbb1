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
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fleet_server.broker.config import AuthThrottleConfig

#: 2**32 × lockout_s is beyond any max_lockout_s: the exponent stops growing there.
_MAX_DOUBLINGS = 32


@dataclass
class _Streak:
    failures: int = 0
    locked_until: float = 0.0


class AuthThrottle:
    """Thread-safe; the broker asks :meth:`locked` before checking a password, then reports
    the outcome with :meth:`failed` or :meth:`succeeded`."""

    def __init__(
        self, config: AuthThrottleConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._streaks: OrderedDict[tuple[str, str], _Streak] = OrderedDict()
        self._good: OrderedDict[str, str] = OrderedDict()  # user name → last good address
        #: Failed logins whose password was checked (wrong user name or password).
        self.failures = 0
        #: Logins refused unchecked because their user name or address was locked.
        self.refused = 0

    def locked(self, *, username: str, address: str) -> float:
        """Seconds until this login may be checked (0: check it now). A positive answer is
        counted as a refusal."""
        now = self._clock()
        with self._lock:
            left = self._left(("pair", f"{username}\n{address}"), now)
            if self._good.get(username) != address:
                left = max(left, self._left(("addr", address), now))
                left = max(left, self._left(("user", username), now))
            if left > 0:
                self.refused += 1
            return left

    def failed(self, *, username: str, address: str) -> None:
        """A checked login failed: count it against the user name, the address and the pair."""
        now = self._clock()
        config = self.config
        with self._lock:
            self.failures += 1
            for key in (("user", username), ("addr", address), ("pair", f"{username}\n{address}")):
                streak = self._touch(key)
                streak.failures += 1
                over = streak.failures - config.free_failures
                if over >= 0:
                    doubled = config.lockout_s * 2 ** min(over, _MAX_DOUBLINGS)
                    streak.locked_until = now + min(doubled, config.max_lockout_s)

    def succeeded(self, *, username: str, address: str) -> None:
        """A correct password: forget its streaks, remember where this user logged in."""
        with self._lock:
            self._streaks.pop(("user", username), None)
            self._streaks.pop(("addr", address), None)
            self._streaks.pop(("pair", f"{username}\n{address}"), None)
            self._good[username] = address
            self._good.move_to_end(username)
            while len(self._good) > self.config.max_tracked:
                self._good.popitem(last=False)

    @property
    def locked_keys(self) -> int:
        """User names and addresses locked right now."""
        now = self._clock()
        with self._lock:
            return sum(1 for s in self._streaks.values() if s.locked_until > now)

    @property
    def tracked(self) -> int:
        with self._lock:
            return len(self._streaks) + len(self._good)

    def _left(self, key: tuple[str, str], now: float) -> float:
        streak = self._streaks.get(key)
        return max(0.0, streak.locked_until - now) if streak is not None else 0.0

    def _touch(self, key: tuple[str, str]) -> _Streak:
        streak = self._streaks.get(key)
        if streak is None:
            streak = self._streaks[key] = _Streak()
            while len(self._streaks) > self.config.max_tracked:
                self._streaks.popitem(last=False)
        else:
            self._streaks.move_to_end(key)
        return streak


class AuthThrottleCollector(Collector):
    """``/metrics``: the embedded broker's failed and throttled logins."""

    def __init__(self, throttle: AuthThrottle) -> None:
        self._throttle = throttle

    def collect(self) -> Iterator[Any]:
        throttle = self._throttle
        yield CounterMetricFamily(
            "edgefleet_mqtt_auth_failures",
            "Embedded broker logins refused for a wrong user name or password (checked).",
            value=throttle.failures,
        )
        yield CounterMetricFamily(
            "edgefleet_mqtt_auth_throttled",
            "Embedded broker logins refused unchecked while their user name or address was "
            "locked after repeated failures.",
            value=throttle.refused,
        )
        yield GaugeMetricFamily(
            "edgefleet_mqtt_auth_locked",
            "User names and source addresses the embedded broker refuses for now.",
            value=throttle.locked_keys,
        )
