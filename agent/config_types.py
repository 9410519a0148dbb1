"""Building blocks of the agent's msgspec configs.

msgspec, not pydantic, because the device process must stay light: pydantic alone (import + one
model) costs +15.4 MB RSS, msgspec +1.1 MB (agent/README.md). This module holds the
base Struct, the field types msgspec does not decode by itself (``Path``, :class:`Secret`, and
the self-validating strings such as :class:`HttpUrl`, all through :func:`dec_hook`). Files are
validated table by table with ``edgefleet.structs.convert_tables``.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import msgspec

T = TypeVar("T")

MASK = "**********"


class ConfigStruct(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Base of every config table: unknown keys are errors, instances are immutable. Each
    subclass says ``frozen=True, kw_only=True`` again: msgspec applies kw_only to the fields a
    class defines (it is not inherited), and mypy needs frozen repeated."""


class Secret:
    """A string kept out of repr, str and logs; ``get_secret_value()`` gives it back."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:  # as pydantic's SecretStr: an empty secret is falsy
        return len(self._value)

    @classmethod
    def decode_value(cls, value: object) -> Self:
        return cls(_string(value))


class HttpUrl(str):
    """An http:// or https:// URL with a host; a trailing '/' is removed."""

    __slots__ = ()

    @classmethod
    def decode_value(cls, value: object) -> Self:
        text = _string(value)
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return cls(text.rstrip("/"))


class MqttUrl(str):
    """A broker URL: mqtt://host[:port] or mqtts://host[:port]."""

    __slots__ = ()

    @classmethod
    def decode_value(cls, value: object) -> Self:
        text = _string(value)
        parts = urlsplit(text)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host[:port] or mqtts://host[:port]")
        try:
            _ = parts.port
        except ValueError as err:
            raise ValueError("has an invalid port") from err
        return cls(text)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"Expected `str`, got `{type(value).__name__}`")
    return value


def dec_hook(kind: type, value: Any) -> Any:
    """msgspec's hook for the types it does not decode: ``Path`` and any class with a
    ``decode_value`` classmethod. Its TypeError/ValueError become msgspec.ValidationError."""
    if kind is Path:
        if isinstance(value, str | PurePath):
            return Path(value)
        raise TypeError(f"Expected a path (`str`), got `{type(value).__name__}`")
    decode = getattr(kind, "decode_value", None)
    if decode is None:
        raise NotImplementedError(f"no decoder for {kind!r}")
    return decode(value)


def convert(data: object, kind: type[T]) -> T:
    """``data`` (TOML or JSON values) as ``kind``; msgspec.ValidationError if it does not fit."""
    return msgspec.convert(data, kind, strict=True, dec_hook=dec_hook)
