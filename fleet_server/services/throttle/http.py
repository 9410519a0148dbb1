"""The HTTP throttle: a failure budget per client address, per server process.

Each client address (an IPv6 address by its /64, which one host usually owns whole) has a
budget of ``budget`` wrong credentials that refills at ``budget / window_s`` per second (a token
bucket). Once it is spent, the address is refused (429 with ``Retry-After``) without the
credential being looked at, until one failure's worth has refilled: ``window_s / budget``
seconds (3 s by default). Refused attempts cost nothing, so a client that stops failing is back
within that time — nobody is locked out for long — while a guesser is held to ``budget`` tries
per ``window_s`` (20 a minute by default, against 100 a second unthrottled). The budget is
:class:`~.policies.RefillingBudget`; the table, policies and metric shape are shared with the
embedded broker's throttle (:mod:`fleet_server.services.throttle`).

A credential that has been accepted recently (any address, within ``known_good_s``) is still
checked while its address is refused: a device or operator behind the same NAT as a guesser
keeps working. What this lets a refused guesser learn is only whether a guess is one of those
recently used credentials — the server's tokens are 32 random bytes, so no guess ever is. A
credential first presented from a refused address waits, like any other, for the refill.

Memory is bounded: at most ``max_clients`` addresses and ``max_known`` credential digests
(least recently used dropped first; an address whose budget has refilled completely is
forgotten). A flood from many addresses evicts its own entries, and each address still gets
only ``budget`` tries before it is refused.

The table lives in the process: with N replicas behind a load balancer a guesser gets up to N
budgets (each replica counts its own). Sharing it through the database would make every wrong
guess a write; per process keeps a guess as cheap to refuse as to make.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from fleet_server.services.throttle.metrics import (
    Family,
    SnapshotCollector,
    ThrottleMetrics,
    ThrottleSnapshot,
)
from fleet_server.services.throttle.policies import Debt, RefillingBudget
from fleet_server.services.throttle.table import FailureTable, RecentMap

#: What a credential was for: the label of the metrics.
KINDS = ("operator", "device", "enrollment")

METRICS = ThrottleMetrics(
    failures=Family(
        "edgefleet_auth_failures", "Wrong credentials presented (answered 401), by kind."
    ),
    refused=Family(
        "edgefleet_auth_throttled",
        "Requests refused (429) because their address spent its failure budget, by kind.",
    ),
    clients=Family(
        "edgefleet_auth_throttle_clients",
        "Client addresses with failures in the throttle table (bounded).",
    ),
    blocked=Family(
        "edgefleet_auth_throttle_blocked_clients", "Client addresses refused right now."
    ),
    known=Family(
        "edgefleet_auth_known_credentials",
        "Recently accepted credentials that pass refused addresses (bounded).",
    ),
    label="kind",
    labels=KINDS,
)


class AuthThrottle:
    """The per-process failure table; thread-safe (sync routes run in a thread pool)."""

    def __init__(
        self,
        *,
        budget: int,
        window_s: float,
        max_clients: int = 10_000,
        known_good_s: float = 86_400.0,
        max_known: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget < 1 or window_s <= 0 or max_clients < 1 or max_known < 1 or known_good_s <= 0:
            raise ValueError("throttle budget, window and table sizes must be positive")
        self.policy = RefillingBudget(budget=budget, window_s=window_s)
        self.known_good_s = known_good_s
        self._clock = clock
        self._clients: FailureTable[str, Debt] = FailureTable(self.policy, max_clients)
        self._known: RecentMap[str, float] = RecentMap(max_known)  # digest → monotonic expiry
        self._failures = dict.fromkeys(KINDS, 0)
        self._refused = dict.fromkeys(KINDS, 0)
        self._lock = threading.Lock()

    def retry_after(self, client: str, digest: str | None) -> int | None:
        """Seconds until ``client`` may try again (at least 1), or None if the credential with
        ``digest`` (its SHA-256; None: no credential) is to be checked now."""
        now = self._clock()
        with self._lock:
            if digest is not None and self._known_locked(digest, now):
                return None
            wait = self._clients.wait(client, now)
            return max(1, math.ceil(wait)) if wait > 0 else None

    def refused(self, kind: str) -> None:
        with self._lock:
            self._refused[kind] = self._refused.get(kind, 0) + 1

    def failed(self, client: str, kind: str) -> None:
        """A wrong credential from ``client``: it spends one of the budget."""
        now = self._clock()
        with self._lock:
            self._failures[kind] = self._failures.get(kind, 0) + 1
            self._clients.charge(client, now)

    def succeeded(self, digest: str) -> None:
        """The credential with ``digest`` was accepted: let it through refused addresses."""
        now = self._clock()
        with self._lock:
            self._known.put(digest, now + self.known_good_s)

    def snapshot(self) -> ThrottleSnapshot:
        """Counters and table sizes, consistent with each other (for ``/metrics``)."""
        now = self._clock()
        with self._lock:
            return ThrottleSnapshot(
                failures=dict(self._failures),
                refused=dict(self._refused),
                clients=len(self._clients),
                blocked=self._clients.blocked(now),
                known=len(self._known),
            )

    def _known_locked(self, digest: str, now: float) -> bool:
        expiry = self._known.get(digest)
        if expiry is None:
            return False
        if expiry <= now:
            self._known.pop(digest)
            return False
        return True


class ThrottleCollector(SnapshotCollector):
    def __init__(self, throttle: AuthThrottle) -> None:
        super().__init__(throttle.snapshot, METRICS)
