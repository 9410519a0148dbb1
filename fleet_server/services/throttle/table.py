"""The bounded, per-process tables both throttles keep, and their failure counters.

Neither table locks: a throttle does several lookups per decision (a known-good holder, then
one or three keys) and holds its own lock around them, so a decision sees one state.
Both stay bounded whatever a flood sends: least recently used entries go first (measured in
``tests/fleet_server/test_auth_throttle.py``: 50,000 addresses → 5,000 entries, under 5 MB).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from fleet_server.services.throttle.policies import FailurePolicy

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")
V = TypeVar("V")


class RecentMap(Generic[K, V]):
    """At most ``max_size`` entries, the least recently put dropped first (known-good holders)."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("a throttle table must hold at least one entry")
        self.max_size = max_size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class FailureTable(Generic[K, S]):
    """Failure state per key under ``policy``, ordered by last failure; at most ``max_keys``,
    and states the policy may forget are dropped from the oldest end as failures arrive."""

    def __init__(self, policy: FailurePolicy[S], max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("a throttle table must hold at least one entry")
        self.policy = policy
        self.max_keys = max_keys
        self._states: OrderedDict[K, S] = OrderedDict()

    def wait(self, key: K, now: float) -> float:
        """Seconds until a credential from ``key`` is checked (0: now)."""
        state = self._states.get(key)
        return 0.0 if state is None else self.policy.wait(state, now)

    def charge(self, key: K, now: float) -> None:
        """One checked failure from ``key``."""
        self._states[key] = self.policy.charge(self._states.pop(key, None), now)
        while self._states:
            oldest = next(iter(self._states.values()))
            if len(self._states) <= self.max_keys and not self.policy.forgettable(oldest, now):
                break
            self._states.popitem(last=False)

    def forget(self, key: K) -> None:
        self._states.pop(key, None)

    def blocked(self, now: float) -> int:
        """Keys refused right now."""
        return sum(1 for state in self._states.values() if self.policy.wait(state, now) > 0)

    def __len__(self) -> int:
        return len(self._states)
