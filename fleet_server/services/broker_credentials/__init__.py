"""Broker credentials for devices: a Protocol (:mod:`.base`), the static-file and
dynamic-security implementations, and the registry that picks one (:mod:`.registry`)."""

from fleet_server.services.broker_credentials.base import (
    Applied,
    BrokerCredentials,
    CredentialsError,
    SyncReport,
)
from fleet_server.services.broker_credentials.static import StaticFileCredentials

__all__ = [
    "Applied",
    "BrokerCredentials",
    "CredentialsError",
    "StaticFileCredentials",
    "SyncReport",
]
