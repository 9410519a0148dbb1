"""The hand-written broker registry: config ``kind`` → factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleet_server.broker.base import BrokerBackend, BrokerError
from fleet_server.broker.config import BrokerConfig
from fleet_server.broker.embedded import EmbeddedBroker
from fleet_server.broker.external import ExternalBroker

#: kind → factory taking that kind's config model.
BROKERS: dict[str, Callable[[Any], BrokerBackend]] = {
    "embedded": EmbeddedBroker.from_config,
    "external": ExternalBroker.from_config,
}


def create_broker(config: BrokerConfig) -> BrokerBackend:
    """Build (not start) the broker a config describes."""
    factory = BROKERS.get(config.kind)
    if factory is None:
        raise BrokerError(f"unknown broker kind {config.kind!r}; known: {sorted(BROKERS)}")
    return factory(config)
