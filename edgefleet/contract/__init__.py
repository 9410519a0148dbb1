"""The EdgeFleet contract: the one vocabulary the converter, the agent and the server share.

* :mod:`~edgefleet.contract.manifest` — ``manifest.json`` of an artifact.
* :mod:`~edgefleet.contract.topics` — the MQTT topic layout, QoS and retained flags.
* :mod:`~edgefleet.contract.payloads` — telemetry, state, event, status and desired-state JSON.

Imports msgspec and the standard library only, never pydantic: the contract is imported on every
device, whose RSS budget is bare onnxruntime + 15 MB, and pydantic alone costs +15.4 MB (import +
one model) where msgspec costs +1.1 MB. Documented in ``docs/contract.md``; the pydantic types the
server and the converter embed in their own models are in :mod:`edgefleet.contract.pydantic_types`.
"""

from edgefleet.contract.common import SCHEMA_VERSION, DeviceId, ModelName, ModelRef, ModelVersion
from edgefleet.contract.errors import ContractError
from edgefleet.contract.manifest import (
    MANIFEST_FILE,
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
    DesiredModel,
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
from edgefleet.contract.topics import CHANNELS, PREFIX, Channel, parse_topic, topic

__all__ = [
    "CHANNELS",
    "MANIFEST_FILE",
    "MAX_MANIFEST_BYTES",
    "MAX_PAYLOAD_BYTES",
    "PREFIX",
    "SCHEMA_VERSION",
    "Channel",
    "ContractError",
    "DesiredModel",
    "DesiredState",
    "DeviceId",
    "Event",
    "LatencySummary",
    "Manifest",
    "ModelFile",
    "ModelName",
    "ModelRef",
    "ModelVersion",
    "Payload",
    "Preprocessing",
    "Result",
    "SelfTest",
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
