"""Contract types for pydantic models (the server's and the converter's own configs and API).

The contract itself is msgspec and never imports pydantic (device RSS); this bridge does, and
``edgefleet.contract`` does not import it. It gives:

* :data:`DeviceId`, :data:`ModelName`, :data:`ModelVersion` — the contract's patterns, checked
  by pydantic with the wording pydantic users saw before ("invalid model name '...': must match").
* :func:`struct_field` — an annotated type that embeds a contract Struct in a pydantic model:
  validated with ``msgspec.convert`` (so every Meta constraint and ``__post_init__`` rule holds),
  serialized with ``msgspec.to_builtins``, described by msgspec's JSON schema.
  :data:`PreprocessingField` is the one the converter uses.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec
from pydantic import AfterValidator, PlainSerializer, PlainValidator, WithJsonSchema

from edgefleet.contract.base import Strict, decoding, one_line
from edgefleet.contract.common import DEVICE_ID_PATTERN, MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN
from edgefleet.contract.manifest import Preprocessing

S = TypeVar("S", bound=Strict)


def _check(pattern: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"invalid {what} {value[:80]!r}: must match {pattern}")
        return value

    return AfterValidator(check)


#: A device id is one MQTT topic level (see :data:`edgefleet.contract.DeviceId`).
DeviceId = Annotated[str, _check(DEVICE_ID_PATTERN, "device id")]
#: A model name: lowercase, digits, '.', '-', '_'; also used in URLs and file names.
ModelName = Annotated[str, _check(MODEL_NAME_PATTERN, "model name")]
#: A model version: free-form but URL- and file-name-safe, e.g. ``1.2.0`` or ``2026-11-23.1``.
ModelVersion = Annotated[str, _check(MODEL_VERSION_PATTERN, "model version")]


def _inline_refs(schema: Any, defs: dict[str, Any]) -> Any:
    """msgspec's schema with its ``$ref``s to ``$defs`` replaced by the definitions."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline_refs(value, defs) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(item, defs) for item in schema]
    return schema


def struct_field(cls: type[S]) -> tuple[PlainValidator, PlainSerializer, WithJsonSchema]:
    """The pydantic annotations that validate, serialize and describe contract Struct ``cls``;
    use as ``Annotated[cls, *struct_field(cls)]``."""

    def validate(value: Any) -> S:
        if isinstance(value, cls):
            return value
        try:
            with decoding():
                return msgspec.convert(value, type=cls)
        except msgspec.ValidationError as err:
            raise ValueError(one_line(err)) from err

    def serialize(value: S) -> Any:
        return msgspec.to_builtins(value)

    schema = msgspec.json.schema(cls)
    inline = _inline_refs(schema, schema.get("$defs", {}))
    return PlainValidator(validate), PlainSerializer(serialize), WithJsonSchema(inline)


_PRE_VALIDATE, _PRE_SERIALIZE, _PRE_SCHEMA = struct_field(Preprocessing)
#: :class:`~edgefleet.contract.Preprocessing` inside a pydantic model.
PreprocessingField = Annotated[Preprocessing, _PRE_VALIDATE, _PRE_SERIALIZE, _PRE_SCHEMA]

__all__ = ["DeviceId", "ModelName", "ModelVersion", "PreprocessingField", "struct_field"]
