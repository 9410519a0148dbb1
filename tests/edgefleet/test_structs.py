"""edgefleet.structs: which fields are tables, and msgspec errors as ``path: message`` lines."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest

from edgefleet.structs import TableErrors, anchored, convert_tables, error_line, tables, tags


class _Inner(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    n: Annotated[int, msgspec.Meta(ge=1)] = 1


class _A(msgspec.Struct, tag_field="type", tag="a", forbid_unknown_fields=True):
    pass


class _B(msgspec.Struct, tag_field="type", tag="b", forbid_unknown_fields=True):
    pass


class _Outer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    inner: _Inner = msgspec.field(default_factory=_Inner)
    plugin: _A | _B | None = None
    items: list[int] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name == "x" and self.inner.n == 2:
            raise ValueError("name x needs inner.n other than 2")


def test_tables_and_tags() -> None:
    assert tables(_Outer) == {"inner": _Inner, "plugin": _A | _B | None}
    assert tags(_A | _B | None) == ["a", "b"] and tags(int) == []


def test_each_bad_table_and_the_top_level_give_a_line() -> None:
    with pytest.raises(TableErrors) as info:
        convert_tables({"inner": {"n": 0}, "plugin": {"type": "c"}, "items": ["z"]}, _Outer)
    assert info.value.lines == [
        "items[0]: Expected `int`, got `str`",
        "inner.n: Expected `int` >= 1",
        "plugin.type: Invalid value 'c' (known types: a, b)",
    ]
    with pytest.raises(TableErrors, match=r"^\(root\): Object missing required field `name`$"):
        convert_tables({}, _Outer)


def test_cross_field_rules_run_once_the_parts_are_valid() -> None:
    assert convert_tables({"name": "x"}, _Outer).inner == _Inner(n=1)
    with pytest.raises(TableErrors, match=r"^\(root\): name x needs inner.n other than 2$"):
        convert_tables({"name": "x", "inner": {"n": 2}}, _Outer)


def test_error_line_and_anchored() -> None:
    err = msgspec.ValidationError("Expected `int` - at `$.a[2].b`")
    assert error_line(err, "t") == "t.a[2].b: Expected `int`"
    assert error_line(msgspec.ValidationError("bad"), "t") == "t: bad"
    assert anchored("^a$") == r"^a\Z" and anchored("^a") == "^a"
