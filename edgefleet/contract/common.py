"""Field types shared by the manifest and the payloads."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: Version of the whole contract (manifest + topics + payloads). Bump it, add a migration and a
#: CHANGELOG line marked BREAKING whenever a field changes meaning or is removed.
SCHEMA_VERSION: Final = 1

#: The patterns behind DeviceId, ModelName and ModelVersion, for code that declares its own types.
DEVICE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MODEL_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,62}$"
MODEL_VERSION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_NAME = re.compile(MODEL_NAME_PATTERN)
_VERSION = re.compile(MODEL_VERSION_PATTERN)


def _check(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {what} {value[:80]!r}: must match {pattern.pattern}")
        return value

    return AfterValidator(check)


#: A device id is one MQTT topic level: lowercase letters, digits, '-' and '_' (no '/', '+', '#'),
#: so a broker ACL can confine a device to ``edgefleet/v1/<device_id>/#``.
DeviceId = Annotated[str, _check(_DEVICE_ID, "device id")]
#: A model name: lowercase, digits, '.', '-', '_'; also used in URLs and file names.
ModelName = Annotated[str, _check(_NAME, "model name")]
#: A model version: free-form but URL- and file-name-safe, e.g. ``1.2.0`` or ``2026-11-23.1``.
ModelVersion = Annotated[str, _check(_VERSION, "model version")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Lowercase hex SHA-256.")]


class Strict(BaseModel):
    """Base for every contract model: unknown fields are rejected, values are not coerced
    silently between unrelated types, and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ModelRef(Strict):
    """A model version as devices and the server name it."""

    name: ModelName = Field(description="Model name, e.g. 'digits'.")
    version: ModelVersion = Field(description="Model version, e.g. '1.0.0'.")

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"
