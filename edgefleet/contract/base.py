"""The base of every contract struct: msgspec, strict, immutable, validated however it is built.

msgspec (not pydantic) because the contract is imported on every device, where RSS is the
budget: pydantic costs +15.4 MB (import + one model), msgspec +1.1 MB.

msgspec validates while it decodes; building a struct in Python (``Telemetry(seq=-1, ...)``)
checks nothing by itself. :meth:`Strict.__post_init__` closes that gap: an instance built in
Python is round-tripped through JSON against its own type, so every ``Meta`` constraint and
every cross-field rule holds for it too, and nested dicts become nested structs. While msgspec
is decoding (a flag in a ContextVar, set by :func:`decoding`), the hook does nothing more than
the subclass's own cross-field checks, so nothing is checked twice and nothing recurses.

The ``model_*`` methods are the small pydantic-style API the call sites use; see each docstring.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Literal, Self

import msgspec

from edgefleet.contract.errors import ContractError

_DECODING: ContextVar[bool] = ContextVar("edgefleet_contract_decoding", default=False)


@contextmanager
def decoding() -> Iterator[None]:
    """Mark the current context as msgspec decoding: ``__post_init__`` skips its round trip."""
    token = _DECODING.set(True)
    try:
        yield
    finally:
        _DECODING.reset(token)


def one_line(err: Exception) -> str:
    """msgspec's message (already ``... - at `$.path```) on one line."""
    return " ".join(str(err).split())


class Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base for every contract struct: unknown fields are rejected, values are not coerced
    between unrelated types, instances are immutable (and hashable when their fields are).

    Subclasses repeat ``frozen=True, kw_only=True``: msgspec applies kw_only only to the fields
    a class defines itself, and mypy needs frozen repeated. Cross-field rules go in
    ``__post_init__``, after ``super().__post_init__()``, raising ValueError."""

    def __post_init__(self) -> None:
        """Validate an instance built in Python; subclasses call this first, then check."""
        if _DECODING.get():
            return
        cls = type(self)
        try:
            with decoding():
                checked = msgspec.json.decode(msgspec.json.encode(self), type=cls)
        except (msgspec.ValidationError, msgspec.EncodeError, TypeError) as err:
            raise ContractError(f"invalid {cls.__name__}: {one_line(err)}") from err
        # Take the decoded values: nested dicts become structs, ints in float fields floats.
        for name in self.__struct_fields__:
            msgspec.structs.force_setattr(self, name, getattr(checked, name))

    # -- the pydantic-style API the call sites use ----------------------------------------------

    @classmethod
    def model_validate(cls, obj: Any) -> Self:
        """Build from Python data (dicts, lists, structs); ContractError with one line if bad."""
        try:
            with decoding():
                return msgspec.convert(obj, type=cls)
        except msgspec.ValidationError as err:
            raise ContractError(f"invalid {cls.__name__}: {one_line(err)}") from err

    @classmethod
    def model_validate_json(cls, raw: bytes | str) -> Self:
        """Parse JSON straight into the struct; ContractError with one line if bad."""
        try:
            with decoding():
                return msgspec.json.decode(raw, type=cls)
        except msgspec.DecodeError as err:  # ValidationError is a DecodeError
            raise ContractError(f"invalid {cls.__name__}: {one_line(err)}") from err

    def model_dump(
        self,
        *,
        mode: Literal["json", "python"] = "python",
        exclude: set[str] | frozenset[str] = frozenset(),
        exclude_none: bool = False,
    ) -> dict[str, Any]:
        """A dict of builtins. ``mode="json"``: what JSON holds (datetimes as ISO strings);
        ``"python"``: datetimes stay datetimes. ``exclude`` drops top-level fields;
        ``exclude_none`` drops None-valued fields of this and nested structs."""
        keep = (datetime,) if mode == "python" else ()
        data: dict[str, Any] = msgspec.to_builtins(
            _without_none(self) if exclude_none else self, builtin_types=keep
        )
        for name in exclude:
            data.pop(name, None)
        return data

    def model_dump_json(self, *, indent: int | None = None) -> str:
        """The JSON text (every field, None as null); ``indent`` pretty-prints."""
        raw = msgspec.json.encode(self)
        if indent is not None:
            raw = msgspec.json.format(raw, indent=indent)
        return raw.decode()

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A copy with ``update`` applied, validated again (ContractError if it breaks a rule)."""
        fields = {name: getattr(self, name) for name in self.__struct_fields__}
        return type(self)(**{**fields, **(update or {})})


def _without_none(value: Any) -> Any:
    """``value`` with None-valued struct fields dropped, recursively (for ``exclude_none``)."""
    if isinstance(value, msgspec.Struct):
        return {
            name: _without_none(item)
            for name in value.__struct_fields__
            if (item := getattr(value, name)) is not None
        }
    if isinstance(value, list | tuple):
        return [_without_none(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items()}
    return value
