"""Config files into msgspec Structs, one error line per bad table (device profile, agent config).

msgspec stops at the first error. So that an operator can fix a file in one pass,
:func:`convert_tables` validates each table (a field holding a Struct or a tagged union of
Structs) on its own, then the top-level keys, and reports one ``path: message`` line for each
that fails; only then are the cross-field rules of the whole (``__post_init__``) checked.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

T = TypeVar("T", bound=msgspec.Struct)
DecHook = Callable[[type, Any], Any]


class TableErrors(ValueError):
    """A config that does not fit its Struct; ``lines`` has one ``path: message`` per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def anchored(pattern: str) -> str:
    """``pattern`` with a final ``$`` turned into ``\\Z``: msgspec matches with ``re.search``,
    and ``$`` also matches before a trailing newline ("dev-1\\n" must not pass as a device id)."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


_AT = re.compile(r"(?P<message>.*) - at `\$(?P<path>[^`]*)`", re.DOTALL)


def error_line(err: msgspec.ValidationError, prefix: str = "") -> str:
    """``prefix.path: message`` from msgspec's "message - at `$.path`" (``(root)`` if no path)."""
    text = " ".join(str(err).split())
    match = _AT.fullmatch(text)
    message, path = (match["message"], match["path"]) if match else (text, "")
    path = path.removeprefix(".")
    where = f"{prefix}.{path}" if prefix and path and not path.startswith("[") else prefix + path
    return f"{where or '(root)'}: {message}"


def members(kind: Any) -> list[Any]:
    """The types a field may hold, without Annotated, unions and None."""
    if typing.get_origin(kind) is typing.Annotated:
        return members(typing.get_args(kind)[0])
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(kind) for m in members(arg)]
    return [] if kind is type(None) else [kind]


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


def tags(kind: Any) -> list[str]:
    """The tags of a tagged union of Structs, in declaration order (empty for anything else)."""
    return [
        str(m.__struct_config__.tag)
        for m in members(kind)
        if _is_struct(m) and m.__struct_config__.tag is not None
    ]


def tables(kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The fields of ``kind`` holding a table (a Struct or a union of Structs): key → type."""
    found: dict[str, Any] = {}
    for field in msgspec.structs.fields(kind):
        held = members(field.type)
        if held and all(_is_struct(m) for m in held):
            found[field.encode_name] = field.type
    return found


@functools.cache
def _keys_only(kind: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """A Struct with ``kind``'s fields, its tables typed Any and no ``__post_init__``: checks
    the top-level keys (unknown, missing, wrong type) without the tables."""
    nested = tables(kind)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(kind):
        held = Any if field.encode_name in nested else field.type
        if field.default is not msgspec.NODEFAULT:
            fields.append((field.name, held, msgspec.field(default=field.default)))
        elif field.default_factory is not msgspec.NODEFAULT:
            fields.append((field.name, held, msgspec.field(default_factory=field.default_factory)))
        else:
            fields.append((field.name, held))
    return msgspec.defstruct(
        f"{kind.__name__}Keys", fields, kw_only=True, forbid_unknown_fields=True
    )


def convert_tables(data: Any, kind: type[T], *, dec_hook: DecHook | None = None) -> T:
    """``data`` (parsed TOML) as ``kind``: TableErrors with a line for each bad table, one for
    the top-level keys, or (all of those fine) one for a cross-field rule of ``kind``."""
    problems: list[str] = []
    whole = dict(data) if isinstance(data, dict) else data
    if isinstance(data, dict):
        for key, held in tables(kind).items():
            if key not in data:
                continue
            try:
                whole[key] = msgspec.convert(data[key], held, strict=True, dec_hook=dec_hook)
            except msgspec.ValidationError as err:
                line = error_line(err, key)
                known = tags(held)
                if known and line.startswith(f"{key}.type: Invalid value"):
                    line += f" (known types: {', '.join(known)})"
                problems.append(line)
        try:
            msgspec.convert(data, _keys_only(kind), strict=True, dec_hook=dec_hook)
        except msgspec.ValidationError as err:
            problems.insert(0, error_line(err))
    if problems:
        raise TableErrors(problems)
    try:
        return msgspec.convert(whole, kind, strict=True, dec_hook=dec_hook)
    except msgspec.ValidationError as err:
        raise TableErrors([error_line(err)]) from err
