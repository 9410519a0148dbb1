"""How a failure is charged and how long a key waits: the two policies the throttles use.

A policy is pure arithmetic over one key's state; the table (:mod:`.table`) keeps the states,
bounds them and asks the policy. Two exist because the two doors are guessed differently:

- :class:`RefillingBudget` (HTTP bearer and enrollment tokens): a token carries no user name,
  so the only key is the client address, shared by every holder behind it; a budget that
  refills steadily lets a NAT full of honest clients absorb a few wrong tokens without ever
  locking anyone out for more than ``window_s / budget`` (3 s by default).
- :class:`DoublingLockout` (MQTT logins at the embedded broker): a login names its user, so a
  targeted guess at one device's password can be braked per name; MQTT clients reconnect with
  their own back-off, so a lock that doubles up to a cap (30 s) costs a misconfigured device
  little and a guesser one try per lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

S = TypeVar("S")

#: 2**32 × lockout_s is beyond any max_lockout_s: the exponent stops growing there.
_MAX_DOUBLINGS = 32


class FailurePolicy(Protocol[S]):
    """One key's failure arithmetic; called with the table's lock held."""

    def charge(self, state: S | None, now: float) -> S:
        """The state after one more checked failure (``None``: the key's first)."""
        ...

    def wait(self, state: S, now: float) -> float:
        """Seconds until the key's next credential is checked (0: check it now)."""
        ...

    def forgettable(self, state: S, now: float) -> bool:
        """Whether dropping the state now changes nothing the policy would decide."""
        ...


@dataclass
class Debt:
    debt: float  # failures not yet refilled, as of ``at``
    at: float  # monotonic


@dataclass(frozen=True)
class RefillingBudget:
    """``budget`` failures that refill at ``budget / window_s`` per second (a token bucket)."""

    budget: int
    window_s: float

    @property
    def rate(self) -> float:
        return self.budget / self.window_s  # failures refilled per second

    def charge(self, state: Debt | None, now: float) -> Debt:
        return Debt(debt=(self._debt(state, now) if state is not None else 0.0) + 1, at=now)

    def wait(self, state: Debt, now: float) -> float:
        over = self._debt(state, now) - (self.budget - 1)
        return over / self.rate if over > 0 else 0.0

    def forgettable(self, state: Debt, now: float) -> bool:
        return self._debt(state, now) <= 0

    def _debt(self, state: Debt, now: float) -> float:
        return max(0.0, state.debt - (now - state.at) * self.rate)


@dataclass
class Streak:
    failures: int = 0  # consecutive checked failures (a success forgets the key)
    locked_until: float = 0.0  # monotonic


@dataclass(frozen=True)
class DoublingLockout:
    """After ``free_failures`` a lock of ``lockout_s``, doubled per further failure up to
    ``max_lockout_s``; refusals while locked are not failures and do not extend it."""

    free_failures: int
    lockout_s: float
    max_lockout_s: float

    def charge(self, state: Streak | None, now: float) -> Streak:
        streak = state if state is not None else Streak()
        streak.failures += 1
        over = streak.failures - self.free_failures
        if over >= 0:
            doubled = self.lockout_s * 2 ** min(over, _MAX_DOUBLINGS)
            streak.locked_until = now + min(doubled, self.max_lockout_s)
        return streak

    def wait(self, state: Streak, now: float) -> float:
        return max(0.0, state.locked_until - now)

    def forgettable(self, state: Streak, now: float) -> bool:
        # The streak counts until a success, however long ago its failures were.
        return False
