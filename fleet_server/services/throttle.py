"""Throttling of credential guessing: a failure budget per client address, per server process.

Each client address (an IPv6 address by its /64, which one host usually owns whole) has a
budget of ``budget`` wrong credentials that refills at ``budget / window_s`` per second (a token
bucket). Once it is spent, the address is refused (429 with ``Retry-After``) without the
credential being looked at, until one failure's worth has refilled: ``window_s / budget``
seconds (3 s by default). Refused attempts cost nothing, so a client that stops failing is back
within that time — nobody is locked out for long — while a guesser is held to ``budget`` tries
per ``window_s`` (20 a minute by default, against 100 a second unthrottled).

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

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: What a credential was for: the label of the metrics.
KINDS = ("operator", "device", "enrollment")


@dataclass
class _Budget:
    debt: float  # failures not yet refilled, as of ``at``
    at: float  # monotonic


@dataclass
class ThrottleStats:
    """What ``/metrics`` shows: failures and refusals by credential kind."""

    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


@dataclass(frozen=True)
class ThrottleSnapshot:
    failures: dict[str, int]
    refused: dict[str, int]
    clients: int  # addresses with failures not yet refilled (or not yet pruned)
    blocked: int  # addresses refused right now
    known: int  # credentials that pass refused addresses


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
        self.budget = budget
        self.window_s = window_s
        self.rate = budget / window_s  # failures refilled per second
        self.max_clients = max_clients
        self.known_good_s = known_good_s
        self.max_known = max_known
        self.stats = ThrottleStats()
        self._clock = clock
        self._clients: OrderedDict[str, _Budget] = OrderedDict()
        self._known: OrderedDict[str, float] = OrderedDict()  # digest → monotonic expiry
        self._lock = threading.Lock()

    def retry_after(self, client: str, digest: str | None) -> int | None:
        """Seconds until ``client`` may try again (at least 1), or None if the credential with
        ``digest`` (its SHA-256; None: no credential) is to be checked now."""
        now = self._clock()
        with self._lock:
            if digest is not None and self._known_locked(digest, now):
                return None
            entry = self._clients.get(client)
            if entry is None:
                return None
            debt = self._debt(entry, now)
            if debt <= self.budget - 1:
                return None
            return max(1, math.ceil((debt - (self.budget - 1)) / self.rate))

    def refused(self, kind: str) -> None:
        with self._lock:
            self.stats.refused[kind] = self.stats.refused.get(kind, 0) + 1

    def failed(self, client: str, kind: str) -> None:
        """A wrong credential from ``client``: it spends one of the budget."""
        now = self._clock()
        with self._lock:
            self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
            entry = self._clients.pop(client, None)
            debt = self._debt(entry, now) if entry is not None else 0.0
            self._clients[client] = _Budget(debt=debt + 1, at=now)
            self._prune_clients(now)

    def succeeded(self, digest: str) -> None:
        """The credential with ``digest`` was accepted: let it through refused addresses."""
        now = self._clock()
        with self._lock:
            self._known.pop(digest, None)
            self._known[digest] = now + self.known_good_s
            while len(self._known) > self.max_known:
                self._known.popitem(last=False)

    def snapshot(self) -> ThrottleSnapshot:
        """Counters and table sizes, consistent with each other (for ``/metrics``)."""
        now = self._clock()
        with self._lock:
            blocked = sum(1 for e in self._clients.values() if self._debt(e, now) > self.budget - 1)
            return ThrottleSnapshot(
                failures=dict(self.stats.failures),
                refused=dict(self.stats.refused),
                clients=len(self._clients),
                blocked=blocked,
                known=len(self._known),
            )

    def _debt(self, entry: _Budget, now: float) -> float:
        return max(0.0, entry.debt - (now - entry.at) * self.rate)

    def _known_locked(self, digest: str, now: float) -> bool:
        expiry = self._known.get(digest)
        if expiry is None:
            return False
        if expiry <= now:
            del self._known[digest]
            return False
        return True

    def _prune_clients(self, now: float) -> None:
        """Drop refilled addresses from the least recently failed end, then the oldest ones
        beyond ``max_clients``."""
        while self._clients:
            oldest = next(iter(self._clients.values()))
            if self._debt(oldest, now) > 0 and len(self._clients) <= self.max_clients:
                break
            self._clients.popitem(last=False)


def client_key(host: str | None) -> str:
    """The throttle's key for a client address: IPv4 as is, IPv6 by its /64 (one host or
    customer usually owns the whole prefix, so rotating the last 64 bits gains nothing)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ThrottleCollector(Collector):
    def __init__(self, throttle: AuthThrottle) -> None:
        self._throttle = throttle

    def collect(self) -> Iterator[Any]:
        snap = self._throttle.snapshot()
        fail_family = CounterMetricFamily(
            "edgefleet_auth_failures",
            "Wrong credentials presented (answered 401), by kind.",
            labels=["kind"],
        )
        refused_family = CounterMetricFamily(
            "edgefleet_auth_throttled",
            "Requests refused (429) because their address spent its failure budget, by kind.",
            labels=["kind"],
        )
        for kind in sorted(set(snap.failures) | set(snap.refused)):
            fail_family.add_metric([kind], snap.failures.get(kind, 0))
            refused_family.add_metric([kind], snap.refused.get(kind, 0))
        yield fail_family
        yield refused_family
        yield GaugeMetricFamily(
            "edgefleet_auth_throttle_clients",
            "Client addresses with failures in the throttle table (bounded).",
            value=snap.clients,
        )
        yield GaugeMetricFamily(
            "edgefleet_auth_throttle_blocked_clients",
            "Client addresses refused right now.",
            value=snap.blocked,
        )
        yield GaugeMetricFamily(
            "edgefleet_auth_known_credentials",
            "Recently accepted credentials that pass refused addresses (bounded).",
            value=snap.known,
        )
