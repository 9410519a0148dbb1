"""Database tables and their API schemas, by domain. Importing this registers every table on
``SQLModel.metadata`` (migrations compare against it)."""

from fleet_server.models.devices import (
    Device,
    DeviceCreate,
    DeviceCreated,
    DevicePublic,
    ModelRefPublic,
)
from fleet_server.models.lease import LeaseRow
from fleet_server.models.models import ModelVersion, ModelVersionPublic
from fleet_server.models.telemetry import (
    EventPublic,
    EventRow,
    TelemetryHourlyRow,
    TelemetryPublic,
    TelemetryRow,
)

__all__ = [
    "Device",
    "DeviceCreate",
    "DeviceCreated",
    "DevicePublic",
    "EventPublic",
    "EventRow",
    "LeaseRow",
    "ModelRefPublic",
    "ModelVersion",
    "ModelVersionPublic",
    "TelemetryHourlyRow",
    "TelemetryPublic",
    "TelemetryRow",
]
