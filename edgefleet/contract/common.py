"""Field types shared by the manifest and the payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from edgefleet.contract.base import Strict
from edgefleet.structs import anchored

__all__ = [
    "DEVICE_ID_PATTERN",
    "DesiredModel",
    "MODEL_NAME_PATTERN",
    "MODEL_VERSION_PATTERN",
    "SCHEMA_VERSION",
    "AwareDatetime",
    "DeviceId",
    "ModelName",
    "ModelRef",
    "ModelVersion",
    "Sha256Hex",
    "Strict",
]

#: Version of the whole contract (manifest + topics + payloads). Bump it, add a migration and a
#: CHANGELOG line marked BREAKING whenever a field changes meaning or is removed.
#: 2 added input statistics and class counts to telemetry, the capture policy to the desired
#: state and the sample metadata; 3 added the shadow model (``DesiredState.shadow``) and its
#: report (``Telemetry.shadow``). An older payload is still read as it is (its new fields take
#: their defaults) and written back byte for byte (see ``payloads.encode``).
SCHEMA_VERSION: Final = 3
#: The payload schema versions this EdgeFleet reads.
PayloadSchemaVersion = Annotated[
    Literal[1, 2, 3], msgspec.Meta(description="Contract schema version.")
]
#: A timestamp with a timezone (naive datetimes are refused).
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]

#: The patterns behind DeviceId, ModelName and ModelVersion, for code that declares its own types.
DEVICE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MODEL_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,62}$"
MODEL_VERSION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$"


#: A device id is one MQTT topic level: lowercase letters, digits, '-' and '_' (no '/', '+', '#'),
#: so a broker ACL can confine a device to ``edgefleet/v1/<device_id>/#``.
DeviceId = Annotated[
    str,
    msgspec.Meta(
        pattern=anchored(DEVICE_ID_PATTERN),
        description="Device id: one MQTT topic level of lowercase letters, digits, '-', '_'.",
    ),
]
#: A model name: lowercase, digits, '.', '-', '_'; also used in URLs and file names.
ModelName = Annotated[
    str,
    msgspec.Meta(
        pattern=anchored(MODEL_NAME_PATTERN),
        description="Model name: lowercase letters, digits, '.', '-', '_'; URL- and file-safe.",
    ),
]
#: A model version: free-form but URL- and file-name-safe, e.g. ``1.2.0`` or ``2026-11-23.1``.
ModelVersion = Annotated[
    str,
    msgspec.Meta(
        pattern=anchored(MODEL_VERSION_PATTERN),
        description="Model version, e.g. '1.2.0' or '2026-11-23.1'; URL- and file-safe.",
    ),
]
Sha256Hex = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z", description="Lowercase hex SHA-256.")
]


class ModelRef(Strict, frozen=True, kw_only=True):
    """A model version as devices and the server name it."""

    name: Annotated[ModelName, msgspec.Meta(description="Model name, e.g. 'digits'.")]
    version: Annotated[ModelVersion, msgspec.Meta(description="Model version, e.g. '1.0.0'.")]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class DesiredModel(Strict, frozen=True, kw_only=True):
    """Where to fetch the artifact bundle of a model version, and how to check it."""

    name: Annotated[str, Meta(description="Model name (checked as a ModelRef by the device).")]
    version: Annotated[str, Meta(description="Model version (checked as a ModelRef).")]
    url: Annotated[
        str, Meta(min_length=1, max_length=2048, description="HTTP(S) URL of the bundle.")
    ]
    sha256: Annotated[Sha256Hex, Meta(description="SHA-256 of the bundle file.")]
    size: Annotated[int, Meta(ge=1, description="Bundle size in bytes.")]
    signature: Annotated[str, Meta(max_length=200, description="Manifest signature.")] | None = None

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version)
