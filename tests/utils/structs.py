"""Checks on msgspec config Structs shared by the agent and profile tests."""

from __future__ import annotations

import types
import typing

import msgspec


def descriptions(kind: object) -> list[str]:
    """Every ``Meta(description=...)`` on a field type: on the type or on a union member."""
    if typing.get_origin(kind) is typing.Annotated:
        inner, *metas = typing.get_args(kind)
        found = [m.description for m in metas if isinstance(m, msgspec.Meta) and m.description]
        return found + descriptions(inner)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return [d for arg in typing.get_args(kind) for d in descriptions(arg)]
    return []


def undescribed(*kinds: type[msgspec.Struct]) -> list[str]:
    """``Struct.field`` for each field of ``kinds`` without a description."""
    return [
        f"{kind.__name__}.{field.name}"
        for kind in kinds
        for field in msgspec.structs.fields(kind)
        if not descriptions(field.type)
    ]
