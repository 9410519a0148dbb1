"""Credential-guessing throttles: one owner for the table, the policies, the keys and the metrics.

Both doors where a secret is presented — HTTP (bearer and enrollment tokens, :mod:`.http`) and
the embedded MQTT broker (user name and password, :mod:`fleet_server.broker.throttle`) — do the
same thing: before a credential is checked, ask whether its key has failed too often (refuse it
unchecked if so); after, charge a failure or remember a good holder. They share here:

- :mod:`.table`: the per-process, LRU-bounded failure table and the bounded known-good map;
- :mod:`.policies`: the :class:`~.policies.FailurePolicy` Protocol and its two plugins, a
  refilling budget (HTTP) and a doubling lockout (MQTT) — why each door has its own is there;
- :mod:`.metrics`: the ``/metrics`` shape (failures, refusals, keys refused now, table sizes);
- :mod:`.keys`: what a client address counts as (an IPv6 address by its /64).

What stays with each door is what its protocol presents: a bearer token has no user name, so
HTTP keys by address and lets a recently accepted token's digest through; an MQTT login names
its user, so the broker keys by user name, address and the pair, and lets a user through from
the address it last logged in from.
"""

from fleet_server.services.throttle.http import KINDS, AuthThrottle, ThrottleCollector
from fleet_server.services.throttle.keys import client_key
from fleet_server.services.throttle.metrics import ThrottleSnapshot

__all__ = ["KINDS", "AuthThrottle", "ThrottleCollector", "ThrottleSnapshot", "client_key"]
