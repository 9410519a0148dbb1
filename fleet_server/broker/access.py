"""Who may connect to the embedded broker and what each identity may do on which topic.

The broker knows nothing about the database: the server hands it an :class:`Authenticator`
(anything with an ``authenticate`` method), and the broker asks it once per CONNECT, from a
worker thread. The rule it then enforces is the contract's topic layout:

* the server identity may publish, subscribe and receive anything;
* a device may publish only to ``edgefleet/v1/<its id>/{telemetry,state,events,status,results}``
  (its Last Will included), and subscribe to / receive only ``edgefleet/v1/<its id>/desired``
  (exactly that filter: no wildcards).

The same rule, written for Mosquitto, is in :mod:`fleet_server.services.mosquitto`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edgefleet.contract import CHANNELS, Channel, topic
from edgefleet.contract.errors import ContractError

#: Channels a device publishes on (telemetry, state, events, status, results).
DEVICE_PUBLISH_CHANNELS = tuple(channel for channel, spec in CHANNELS.items() if spec.from_device)
#: Channels a device subscribes to (desired).
DEVICE_SUBSCRIBE_CHANNELS = tuple(
    channel for channel, spec in CHANNELS.items() if not spec.from_device
)


@dataclass(frozen=True)
class Identity:
    """An authenticated MQTT client: the server (``device_id`` None) or one device."""

    username: str
    device_id: str | None = None

    @classmethod
    def server(cls, username: str) -> Identity:
        return cls(username=username, device_id=None)

    @classmethod
    def device(cls, device_id: str) -> Identity:
        return cls(username=device_id, device_id=device_id)

    @property
    def is_server(self) -> bool:
        return self.device_id is None

    def may_publish(self, name: str) -> bool:
        """May this identity publish to topic ``name`` (also checked for its Last Will)?"""
        if self.device_id is None:
            return True
        return name in _topics(self.device_id, DEVICE_PUBLISH_CHANNELS)

    def may_subscribe(self, topic_filter: str) -> bool:
        """May this identity subscribe to ``topic_filter``? Devices: only their own desired."""
        if self.device_id is None:
            return True
        return topic_filter in _topics(self.device_id, DEVICE_SUBSCRIBE_CHANNELS)

    def may_receive(self, name: str) -> bool:
        """May a message on ``name`` be delivered to this identity (defence in depth)?"""
        return self.may_subscribe(name)


def _topics(device_id: str, channels: tuple[Channel, ...]) -> frozenset[str]:
    try:
        return frozenset(topic(device_id, channel) for channel in channels)
    except ContractError:  # an identity whose name cannot be a topic level may do nothing
        return frozenset()


class Authenticator(Protocol):
    """Checks one CONNECT's credentials: the identity, or None to refuse.

    Called from a worker thread (it may query a database); it must not raise for bad input
    (a raise is logged and refuses the connection). ``username`` is never empty; ``password``
    may be empty.
    """

    def authenticate(self, *, username: str, password: str) -> Identity | None: ...
