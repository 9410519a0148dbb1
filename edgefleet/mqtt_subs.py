"""Subscriptions of :class:`~edgefleet.mqtt.MqttTransport`: handler types, topic-filter
matching (MQTT v5 ``$share/<group>/`` prefixes included) and the per-message acknowledgement of
manual-ack transports. No paho import: the transport passes its client in."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MessageHandler = Callable[[str, bytes, bool], None]
"""Called on paho's network thread with (topic, payload, retained): keep it short."""

AckedHandler = Callable[[str, bytes, bool, Callable[[], None]], None]
"""Like MessageHandler, plus ``ack``: on a ``manual_ack`` transport the broker gets the message's
PUBACK only when every acked handler that matched has called it (from any thread, once)."""


@dataclass
class Subscription:
    qos: int
    handler: MessageHandler | AckedHandler
    levels: tuple[str, ...]
    acked: bool = False


class PendingAck:
    """Sends one message's PUBACK once each of ``count`` handlers has acknowledged it; each
    handler's ``ack`` counts once, however often it is called."""

    def __init__(self, client: Any, mid: int, qos: int, count: int) -> None:
        self._client, self._mid, self._qos = client, mid, qos
        self._left = count
        self._lock = threading.Lock()

    def part(self) -> Callable[[], None]:
        done = False

        def ack() -> None:
            nonlocal done
            with self._lock:
                if done:
                    return
                done = True
                self._left -= 1
                if self._left != 0:
                    return
            self._client.ack(self._mid, self._qos)

        return ack


def filter_levels(topic_filter: str) -> tuple[str, ...]:
    """A subscription filter split into levels; ``$share/<group>/`` is not part of the match."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    return tuple(topic_filter.split("/"))


def topic_matches(levels: tuple[str, ...], topic: str) -> bool:
    """MQTT filter matching ('+' one level, '#' the rest) without building a matcher per call."""
    parts = topic.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            return not (i == 0 and topic.startswith("$"))
        if i >= len(parts):
            return False
        if level == "+":
            if i == 0 and parts[0].startswith("$"):
                return False
            continue
        if level != parts[i]:
            return False
    return len(parts) == len(levels)
