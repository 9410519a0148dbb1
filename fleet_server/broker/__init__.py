"""The MQTT broker the fleet server uses: the embedded amqtt one, or an external one by URL.

Importing this package does not import amqtt; the embedded broker imports it when it starts.
"""

from fleet_server.broker.access import Authenticator, Identity
from fleet_server.broker.base import BrokerBackend, BrokerError
from fleet_server.broker.config import BrokerConfig, EmbeddedBrokerConfig, ExternalBrokerConfig
from fleet_server.broker.embedded import EmbeddedBroker
from fleet_server.broker.external import ExternalBroker
from fleet_server.broker.registry import BROKERS, create_broker

__all__ = [
    "BROKERS",
    "Authenticator",
    "BrokerBackend",
    "BrokerConfig",
    "BrokerError",
    "EmbeddedBroker",
    "EmbeddedBrokerConfig",
    "ExternalBroker",
    "ExternalBrokerConfig",
    "Identity",
    "create_broker",
]
