"""Database tables and their API schemas, by domain. Importing this registers every table on
``SQLModel.metadata`` (migrations compare against it)."""

from fleet_server.models.auth import (
    ApiToken,
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    AuditLog,
    AuditPublic,
    Enrolled,
    EnrollmentToken,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    EnrollmentTokenPublic,
    EnrollRequest,
    Role,
)
from fleet_server.models.comparisons import ModelComparison
from fleet_server.models.devices import (
    Device,
    DeviceCreate,
    DeviceCreated,
    DevicePublic,
    ModelRefPublic,
    PinRequest,
    TagsUpdate,
)
from fleet_server.models.drift import (
    DriftAlert,
    DriftAlertPublic,
    DriftBucket,
    DriftCursor,
    DriftInputBucket,
    DriftReport,
    DriftStatus,
    DriftStatusPublic,
)
from fleet_server.models.lease import LeaseRow
from fleet_server.models.models import (
    LineageEntry,
    LineagePublic,
    ModelVersion,
    ModelVersionPublic,
)
from fleet_server.models.pipelines import (
    PipelineRun,
    PipelineRunPublic,
    PipelineStep,
    PipelineStepPublic,
)
from fleet_server.models.rollouts import Rollout, RolloutDecision, RolloutDevice
from fleet_server.models.samples import CapturePolicyRow, Sample, SampleBudget
from fleet_server.models.shadow import (
    DeviceShadow,
    DeviceShadowPublic,
    ShadowReportRow,
    ShadowRequest,
    ShadowSummary,
)
from fleet_server.models.telemetry import (
    EventPublic,
    EventRow,
    TelemetryHourlyRow,
    TelemetryPublic,
    TelemetryRow,
)

__all__ = [
    "DeviceShadow",
    "DeviceShadowPublic",
    "ShadowReportRow",
    "ShadowRequest",
    "ShadowSummary",
    "ModelComparison",
    "DriftAlert",
    "DriftAlertPublic",
    "DriftBucket",
    "DriftCursor",
    "DriftInputBucket",
    "DriftReport",
    "DriftStatus",
    "DriftStatusPublic",
    "ApiToken",
    "ApiTokenCreate",
    "ApiTokenCreated",
    "ApiTokenPublic",
    "AuditLog",
    "AuditPublic",
    "EnrollRequest",
    "Enrolled",
    "EnrollmentToken",
    "EnrollmentTokenCreate",
    "EnrollmentTokenCreated",
    "EnrollmentTokenPublic",
    "LineageEntry",
    "LineagePublic",
    "PinRequest",
    "Role",
    "TagsUpdate",
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
    "PipelineRun",
    "PipelineRunPublic",
    "PipelineStep",
    "PipelineStepPublic",
    "Rollout",
    "CapturePolicyRow",
    "Sample",
    "SampleBudget",
    "RolloutDecision",
    "RolloutDevice",
    "TelemetryHourlyRow",
    "TelemetryPublic",
    "TelemetryRow",
]
