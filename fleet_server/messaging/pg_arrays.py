"""PostgreSQL ingest statements with one array parameter per column: one round trip per table.

``cursor.executemany`` (even in psycopg's pipeline mode) still costs one Bind/Execute and ~50 µs
of psycopg Python per row; at 500 rows a batch that was most of an ingest worker's time
(cProfile: 2.3 of 6.0 s for 20k telemetry messages). Here a batch is one statement whose
parameters are whole columns, dumped by psycopg's C array adapters:

    INSERT INTO telemetry (device_id, seq, ...)
    SELECT * FROM unnest(%s::varchar(63)[], %s::bigint[], ...)
    ON CONFLICT (device_id, seq) DO NOTHING

    UPDATE device SET last_seen = v.last_seen, ...
    FROM unnest(%s::varchar(63)[], %s::timestamptz[], ...) AS v(_id, last_seen, ...)
    WHERE device.device_id = v._id

The values are exactly those :mod:`.inserts` sends (the same converters: JSON serialised once,
``None`` as JSON ``null``; datetimes aware UTC), so a row reads back the same either way. The
statement still runs inside the batch's one transaction: acknowledge-after-commit is untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Column, Connection, Table
from sqlalchemy.types import TypeDecorator

from fleet_server.messaging.inserts import convert_rows, converter_for


def insert_new(*, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """As :func:`.inserts.insert_new` (same contract, same stored values), in one statement."""
    if not rows:
        return 0
    _require_postgresql(conn)
    names = list(rows[0])
    convert_rows(table=table, rows=rows, dialect="postgresql")
    quote = conn.dialect.identifier_preparer.quote
    columns = ", ".join(quote(n) for n in names)
    arrays = ", ".join(_array_param(conn, table.c[n]) for n in names)
    # Identifiers and types come from the table metadata; every value is a bound parameter.
    sql = (
        f"INSERT INTO {quote(table.name)} ({columns}) SELECT * FROM unnest({arrays}) "  # noqa: S608
        "ON CONFLICT (device_id, seq) DO NOTHING"
    )
    params = [_column(rows, name, table.c[name]) for name in names]
    result = conn.exec_driver_sql(sql, tuple(params))
    return int(result.rowcount)


def update_rows(
    *, conn: Connection, table: Table, key: str, names: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """``UPDATE table SET <names> WHERE <key> = ...`` for every row of ``rows`` (each holding
    ``_id`` and ``names``) in one statement, the values converted as :mod:`.inserts` does."""
    if not rows:
        return
    _require_postgresql(conn)
    quote = conn.dialect.identifier_preparer.quote
    key_column = table.c[key]
    arrays = ", ".join(
        [_array_param(conn, key_column)] + [_array_param(conn, table.c[n]) for n in names]
    )
    aliases = ", ".join(["_id"] + [quote(n) for n in names])
    sets = ", ".join(f"{quote(n)} = v.{quote(n)}" for n in names)
    sql = (
        f"UPDATE {quote(table.name)} SET {sets} FROM unnest({arrays}) AS v({aliases}) "  # noqa: S608
        f"WHERE {quote(table.name)}.{quote(key)} = v._id"
    )
    params: list[list[Any]] = [_column(rows, "_id", key_column)]
    for name in names:
        column = table.c[name]
        values = [row[name] for row in rows]
        convert = converter_for(column.type, "postgresql")
        if convert is not None:
            values = [convert(v) for v in values]
        params.append(_normalise(values, column))
    conn.exec_driver_sql(sql, tuple(params))


def _require_postgresql(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        raise ValueError(f"array statements need PostgreSQL, not {conn.dialect.name!r}")


def _array_param(conn: Connection, column: Column[Any]) -> str:
    """``%b::<type>[]`` for ``column`` (binary: psycopg's text array dumper escapes every
    element in Python); JSON columns travel as JSON text. Strings go as ``text[]``, not
    ``varchar(n)[]``: an explicit cast to ``varchar(n)`` truncates silently, where storing the
    too-long value in the column (an assignment cast) is refused as the executemany path is."""
    base = _base_type(column.type)
    if isinstance(base, sa.String) and not isinstance(base, sa.Enum | sa.JSON):
        return "%b::text[]"
    sql_type = column.type.compile(dialect=conn.dialect)
    return f"%b::{sql_type}[]"


def _column(rows: list[dict[str, Any]], name: str, column: Column[Any]) -> list[Any]:
    return _normalise([row[name] for row in rows], column)


def _normalise(values: list[Any], column: Column[Any]) -> list[Any]:
    """One Python type per array: psycopg dumps a list with its first element's dumper, so an
    ``int`` among floats (or a ``bool`` among ints) must not reach it as such."""
    cast = _cast(_base_type(column.type))
    if cast is None:
        return values
    return [None if v is None else cast(v) for v in values]


def _base_type(column_type: Any) -> Any:
    """The type under a ``TypeDecorator`` (SQLModel's ``AutoString``, our ``UTCDateTime``)."""
    return column_type.impl_instance if isinstance(column_type, TypeDecorator) else column_type


def _cast(column_type: Any) -> Callable[[Any], Any] | None:
    if isinstance(column_type, sa.Boolean):
        return bool
    if isinstance(column_type, sa.Integer):
        return int
    if isinstance(column_type, sa.Float):
        return float
    return None
