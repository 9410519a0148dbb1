"""The EdgeFleet contract: the one vocabulary the converter, the agent and the server share.

* :mod:`~edgefleet.contract.manifest` — ``manifest.json`` of an artifact.
* :mod:`~edgefleet.contract.topics` — the MQTT topic layout, QoS and retained flags.
* :mod:`~edgefleet.contract.payloads` — telemetry, state, event, status and desired-state JSON.
* :mod:`~edgefleet.contract.capture` — input statistics, the capture policy, sample metadata.
* :mod:`~edgefleet.contract.shadow` — the shadow model a device runs beside the served one.

Imports msgspec and the standard library only, never pydantic: the contract is imported on every
device, whose RSS budget is bare onnxruntime + 15 MB, and pydantic alone costs +15.4 MB (import +
one model) where msgspec costs +1.1 MB. Documented in ``docs/contract.md``; the pydantic types the
server and the converter embed in their own models are in :mod:`edgefleet.contract.pydantic_types`.
"""

from edgefleet.contract.capture import (
    CAPTURE_REASONS,
    DEFAULT_OUTSIDE_REFERENCE,
    RARE_BIN_MASS,
    CapturePolicy,
    CaptureReason,
    InputStats,
    SampleMeta,
)
from edgefleet.contract.common import (
    SCHEMA_VERSION,
    DesiredModel,
    DeviceId,
    ModelName,
    ModelRef,
    ModelVersion,
)
from edgefleet.contract.errors import ContractError
from edgefleet.contract.manifest import (
    MANIFEST_FILE,
    MANIFEST_SCHEMA_VERSION,
    MAX_MANIFEST_BYTES,
    Manifest,
    ModelFile,
    Preprocessing,
    SelfTest,
    Signature,
    TensorSpec,
    parse_manifest,
    signing_bytes,
)
from edgefleet.contract.payloads import (
    MAX_PAYLOAD_BYTES,
    DesiredState,
    Event,
    LatencySummary,
    Payload,
    Result,
    State,
    Status,
    Telemetry,
    decode,
    encode,
)
from edgefleet.contract.shadow import ShadowReport, ShadowSpec
from edgefleet.contract.topics import CHANNELS, PREFIX, Channel, parse_topic, topic

__all__ = [
    "CAPTURE_REASONS",
    "CHANNELS",
    "DEFAULT_OUTSIDE_REFERENCE",
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA_VERSION",
    "MAX_MANIFEST_BYTES",
    "MAX_PAYLOAD_BYTES",
    "PREFIX",
    "RARE_BIN_MASS",
    "SCHEMA_VERSION",
    "CapturePolicy",
    "CaptureReason",
    "Channel",
    "ContractError",
    "DesiredModel",
    "DesiredState",
    "DeviceId",
    "Event",
    "InputStats",
    "LatencySummary",
    "Manifest",
    "ModelFile",
    "ModelName",
    "ModelRef",
    "ModelVersion",
    "Payload",
    "Preprocessing",
    "Result",
    "SampleMeta",
    "SelfTest",
    "ShadowReport",
    "ShadowSpec",
    "Signature",
    "State",
    "Status",
    "Telemetry",
    "TensorSpec",
    "decode",
    "encode",
    "parse_manifest",
    "parse_topic",
    "signing_bytes",
    "topic",
]
