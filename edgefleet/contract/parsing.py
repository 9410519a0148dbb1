"""Turning untrusted bytes into contract structs, with one-line errors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from edgefleet.contract.base import Strict, decoding, one_line
from edgefleet.contract.common import SCHEMA_VERSION
from edgefleet.contract.errors import ContractError, NonFiniteNumberError

M = TypeVar("M", bound=Strict)

#: Upgrades from schema version N to N+1, applied in order to a parsed JSON object before
#: validation.
Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v1_is_valid_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 only added optional fields (input statistics, class counts, the capture
    policy); a version-1 object is read as it is and keeps ``schema_version: 1``, so the reader
    knows which agent wrote it and :func:`~edgefleet.contract.payloads.encode` writes it back
    byte for byte. The manifest did not change and is still version 1."""
    return data


def _v2_is_valid_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 only added the optional shadow model and its report; as above."""
    return data


MIGRATIONS: dict[int, Migration] = {1: _v1_is_valid_v2, 2: _v2_is_valid_v3}


def load_json_object(raw: bytes | str, *, what: str, max_bytes: int) -> dict[str, Any]:
    """Parse ``raw`` as one JSON object of at most ``max_bytes``, or raise ContractError
    (:class:`NonFiniteNumberError` for ``NaN``/``Infinity`` tokens and overflowing numbers,
    which ``json.loads`` would otherwise turn into non-finite floats)."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ContractError(f"{what} is {size} bytes; the limit is {max_bytes}")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except NonFiniteNumberError as err:
        raise NonFiniteNumberError(f"{what}: {err}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ContractError(f"{what} is not valid JSON: {err}") from err
    except RecursionError as err:
        raise ContractError(f"{what} is nested too deeply") from err
    if not isinstance(data, dict):
        raise ContractError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _refuse_constant(name: str) -> float:
    raise NonFiniteNumberError(f"{name} is not a JSON number (only finite numbers are)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumberError(f"{text[:40]} is out of the range of a float")
    return value


def migrate(data: dict[str, Any], *, what: str) -> dict[str, Any]:
    """Bring an object written under an older schema version up to :data:`SCHEMA_VERSION`."""
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ContractError(f"{what}: schema_version is missing or not an integer")
    if version > SCHEMA_VERSION:
        raise ContractError(
            f"{what}: schema_version {version} is newer than this EdgeFleet understands "
            f"({SCHEMA_VERSION}); upgrade EdgeFleet"
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ContractError(f"{what}: no migration from schema_version {version}")
        data = step(data)
        version += 1
    return data


def validate(model: type[M], data: dict[str, Any], *, what: str) -> M:
    """Validate a migrated object against ``model``, converting errors to ContractError."""
    try:
        with decoding():
            return msgspec.convert(data, type=model)
    except msgspec.ValidationError as err:
        raise ContractError(f"invalid {what}: {one_line(err)}") from err


def canonical_json(data: Any) -> bytes:
    """The byte form that is hashed and signed: sorted keys, no whitespace, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
